// Uploads on share link pages: drag and drop or the file picker, several files,
// sent one after another in resumable chunks through the JSON API of
// admin_ui/link_api.py. Each file gets a progress bar and its own outcome (the
// server's refusal reason, or "arrived"); files that arrived go into the
// receipt with the SHA-256 the server computed while the bytes streamed.
// A chunk that fails is retried after asking the server where to go on.
// Texts come from the page (data-t-* attributes, in the page's language).
(function () {
  "use strict";

  var form = document.getElementById("upload-form");
  if (!form) {
    return;
  }
  var config = form.dataset;
  var api = config.api;
  var input = document.getElementById("upload-files");
  var zone = document.getElementById("dropzone");
  var list = document.getElementById("upload-list");
  var receipt = document.getElementById("receipt");
  var receiptEmpty = document.getElementById("receipt-empty");
  var lang = document.documentElement.lang || "en";
  var MAX_TRIES = 6;
  var queue = [];
  var running = false;

  function text(key, values) {
    var name = "t" + key.charAt(0).toUpperCase() + key.slice(1);
    var result = config[name] || key;
    Object.keys(values || {}).forEach(function (k) {
      result = result.split("{" + k + "}").join(values[k]);
    });
    return result;
  }

  function bytes(n) {
    return text("bytes", { n: n.toLocaleString(lang) });
  }

  function sleep(ms) {
    return new Promise(function (resolve) {
      setTimeout(resolve, ms);
    });
  }

  // One request; resolves to {status, data} (status 0: no answer from the server).
  function call(method, url, body, onProgress) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("X-Davbox-CSRF", config.csrf);
      if (onProgress && xhr.upload) {
        xhr.upload.addEventListener("progress", function (event) {
          onProgress(event.loaded);
        });
      }
      xhr.onload = function () {
        var data = {};
        try {
          data = xhr.responseText ? JSON.parse(xhr.responseText) : {};
        } catch (e) {
          data = {};
        }
        resolve({ status: xhr.status, data: data });
      };
      xhr.onerror = xhr.ontimeout = xhr.onabort = function () {
        resolve({ status: 0, data: {} });
      };
      if (body instanceof Blob) {
        xhr.send(body);
      } else if (body) {
        xhr.setRequestHeader("Content-Type", "application/json");
        xhr.send(JSON.stringify(body));
      } else {
        xhr.send();
      }
    });
  }

  function transient(response) {
    return response.status === 0 || response.status >= 500 || response.status === 409 ||
      (response.status === 400 && typeof response.data.offset === "number");
  }

  function Row(file) {
    this.item = document.createElement("li");
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var size = document.createElement("span");
    size.className = "size";
    size.textContent = bytes(file.size);
    this.bar = document.createElement("progress");
    this.bar.max = Math.max(file.size, 1);
    this.bar.value = 0;
    this.bar.setAttribute("aria-label", text("progress", { name: file.name }));
    this.state = document.createElement("span");
    this.state.className = "state";
    this.state.textContent = text("waiting");
    this.item.append(name, " ", size, this.bar, this.state);
    list.append(this.item);
  }
  Row.prototype.show = function (message, kind) {
    this.state.textContent = message;
    this.item.className = kind || "";
  };
  Row.prototype.progress = function (done) {
    this.bar.value = done;
  };

  function addReceipt(answer) {
    var row = document.createElement("tr");
    var sha = document.createElement("code");
    sha.className = "sha256";
    sha.textContent = answer.sha256;
    [answer.stored_as ? answer.name + " → " + answer.stored_as : answer.name, bytes(answer.size), sha]
      .forEach(function (value) {
        var cell = document.createElement("td");
        cell.append(value);
        row.append(cell);
      });
    receipt.tBodies[0].append(row);
    receipt.hidden = false;
    receiptEmpty.hidden = true;
  }

  async function send(file, row) {
    row.show(text("sending"), "busy");
    var body = { name: file.name, size: file.size, folder: config.folder };
    var until = document.getElementById("upload-until");
    if (until && until.value) {
      body.available_until = until.value;
    }
    var started = await call("POST", api, body);
    if (started.status !== 201) {
      return refused(row, started);
    }
    var url = api + "/" + encodeURIComponent(started.data.id);
    var chunk = started.data.chunk_size;
    var offset = 0;
    var tries = 0;
    while (offset < file.size) {
      var from = offset;
      var answer = await call(
        "PUT", url + "?offset=" + from, file.slice(from, Math.min(from + chunk, file.size)),
        function (loaded) { row.progress(from + loaded); }
      );
      if (answer.status === 200) {
        offset = answer.data.offset;
        tries = 0;
        row.progress(offset);
        continue;
      }
      if (!transient(answer) || ++tries > MAX_TRIES) {
        return refused(row, answer);
      }
      row.show(text("retry"), "busy");
      await sleep(500 * tries);
      var status = await call("GET", url);
      if (status.status === 200) {
        offset = status.data.offset;
        row.show(text("sending"), "busy");
      } else if (!transient(status)) {
        return refused(row, status);
      }
    }
    row.show(text("checking"), "busy");
    for (tries = 0; tries <= MAX_TRIES; tries++) {
      var done = await call("POST", url);
      if (done.status === 201) {
        row.progress(file.size);
        row.show(text("done"), "done");
        addReceipt(done.data);
        return;
      }
      if (done.status !== 0 && done.status < 500) {
        return refused(row, done);
      }
      await sleep(500 * (tries + 1));
    }
    refused(row, { status: 0, data: {} });
  }

  function refused(row, answer) {
    if (answer.data && answer.data.error && answer.status !== 0 && answer.status < 500) {
      row.show(text("refused") + " " + answer.data.error, "refused");
    } else {
      row.show(text("failed"), "refused");
    }
  }

  async function run() {
    if (running) {
      return;
    }
    running = true;
    while (queue.length) {
      var next = queue.shift();
      try {
        await send(next.file, next.row);
      } catch (e) {
        next.row.show(text("failed"), "refused");
      }
    }
    running = false;
  }

  function add(files) {
    Array.prototype.forEach.call(files, function (file) {
      queue.push({ file: file, row: new Row(file) });
    });
    run();
  }

  input.addEventListener("change", function () {
    add(input.files);
    input.value = "";
  });

  zone.addEventListener("dragover", function (event) {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", function () {
    zone.classList.remove("over");
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) {
      add(event.dataTransfer.files);
    }
  });
  // A file dropped beside the zone must not make the browser leave the page.
  document.addEventListener("dragover", function (event) { event.preventDefault(); });
  document.addEventListener("drop", function (event) { event.preventDefault(); });
})();
