"""Real sync clients against a real server: nextcloudcmd, owncloudcmd and rclone.

Each test syncs a tree (nested folders, text and binary files of 1 byte,
70 KB and 5 MB, a non-ASCII name) up, changes both sides, syncs again and
ends with both sides byte-identical. What travelled is read from the clients'
own logs (which items they propagated, with which status) and from the
server's access log (which requests reached it), so a sync that "succeeds"
by moving nothing, or that moves everything again, is caught.

The sync clients log through Qt; the lines these tests read are
``Starting <instruction> propagation of "<path>" by OCC::<Job>`` and
``(Completed|Could not complete) propagation of "<path>" ... with status
OCC::SyncFileItem::<Status>``. Nextcloud's client writes the second form as
a warning for every folder it creates (``PropagateRemoteMkdir`` keeps the
reply's error string, "Unknown error", even on success), so the status is
what counts, not the wording.

rclone's ``check`` compares sizes and the server's ``oc:checksums`` (SHA1 and
MD5 kept for every WebDAV upload), so a flipped byte is found without
downloading. The last test checks that the
access log names non-ASCII paths as sent (it showed them in WSGI's latin-1
form before).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import requests

from davbox import app_passwords

pytestmark = pytest.mark.clients

NON_ASCII = "Übersicht café.txt"
# Whole seconds plus a fraction: the clients send X-OC-Mtime in whole seconds.
MTIME = 1_600_000_000.25  # 2020-09-13 12:26:40 UTC
PROPFIND_BODY = (
    b'<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:resourcetype/><d:getcontentlength/><d:getlastmodified/></d:prop></d:propfind>"
)
# Requests that move or change content; a sync with nothing to do sends none.
TRANSFERS = {"GET", "PUT", "MOVE", "COPY", "DELETE", "MKCOL", "PROPPATCH"}
ACCESS = re.compile(
    r'davbox\.access: (?P<client>\S+) (?P<user>\S+) "(?P<method>[A-Z]+) (?P<path>.*)" '
    r"(?P<status>\d{3})"
)
STARTING = re.compile(
    r"Starting (?:CSyncEnums::|SyncInstruction\()CSYNC_INSTRUCTION_(?P<instruction>\w+)\)?"
    r' propagation of "(?P<path>.*)" by OCC::(?P<job>\w+)\('
)
FINISHED = re.compile(
    r'(?:Completed|Could not complete) propagation of "(?P<path>.*)" by OCC::\w+\(0x[0-9a-f]+\)'
    r" with status OCC::SyncFileItem::(?P<status>\w+)"
)
SEVERE = re.compile(r"^\S+ \S+ \[ (?:critical|fatal) .*$", re.MULTILINE)
# Warnings of the propagator and the sync engine that mention an error.
PROPAGATION_WARNING = re.compile(
    r"^\S+ \S+ \[ warning [\w.]*(?:propagat|engine)[\w.]* \].*rror.*$", re.MULTILINE
)
JOB_KINDS = {
    "PropagateRemoteMkdir": "mkcol",
    "PropagateRemoteMove": "move",
    "PropagateRemoteDelete": "delete",
    "PropagateDownloadFile": "download",
    "PropagateLocalMkdir": "local-mkdir",
    "PropagateLocalRemove": "local-remove",
    "PropagateLocalRename": "local-rename",
}


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (scripts/test.sh installs it)")
    return path


def _client_env(home: Path) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": "UTC"}


def _account(server, name: str, box: str) -> tuple[str, str]:
    """An account with a mailbox it is a member of, and an app password for the client."""
    server.add_user(name)
    server.mailbox(box, **{name: "member"})
    return name, app_passwords.create(server.database(), name, "sync")


# -- the two sides' trees ---------------------------------------------------------


def _initial_tree() -> dict[str, bytes]:
    return {
        "a.txt": b"alpha\n",
        NON_ASCII: "Grüße aus Köln, ça va?\n".encode(),
        "docs/notes.txt": b"line\n" * 200,
        "sub/one.bin": os.urandom(1),
        "sub/deep/seventy.bin": os.urandom(70 * 1024),
        "big.bin": os.urandom(5 * 1024 * 1024),
    }


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for index, (rel, data) in enumerate(sorted(files.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME + index, MTIME + index))


def _is_journal(name: str) -> bool:
    return name.startswith(".sync_") and ".db" in name


def local_tree(root: Path) -> tuple[dict[str, tuple[bytes, int]], set[str]]:
    """({path: (bytes, whole-second mtime)}, {folders}) below ``root``, sync journals left out."""
    files: dict[str, tuple[bytes, int]] = {}
    folders: set[str] = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_dir():
            folders.add(rel)
        elif not _is_journal(path.name):
            files[rel] = (path.read_bytes(), int(path.stat().st_mtime))
    return files, folders


def server_tree(server, auth, box: str) -> tuple[dict[str, tuple[bytes, int]], set[str]]:
    """The same for mailbox ``box`` on the server: PROPFIND folder by folder, GET each file."""
    files: dict[str, tuple[bytes, int]] = {}
    folders: set[str] = set()
    pending = [""]
    top = f"/dav/{box}/"
    while pending:
        folder = pending.pop()
        answer = requests.request(
            "PROPFIND",
            server.dav(f"{box}/{quote(folder)}"),
            auth=auth,
            headers={"Depth": "1"},
            data=PROPFIND_BODY,
            timeout=30,
        )
        assert answer.status_code == 207, (folder, answer.status_code, answer.text)
        for response in ET.fromstring(answer.content).iter("{DAV:}response"):
            href = unquote(urlsplit(response.findtext("{DAV:}href") or "").path)
            assert href.startswith(top), href
            rel = href[len(top) :].rstrip("/")
            if rel == folder.rstrip("/"):
                continue
            prop = response.find("{DAV:}propstat/{DAV:}prop")
            assert prop is not None
            if prop.find("{DAV:}resourcetype/{DAV:}collection") is not None:
                folders.add(rel)
                pending.append(rel + "/")
                continue
            got = requests.get(server.dav(f"{box}/{quote(rel)}"), auth=auth, timeout=30)
            assert got.status_code == 200, (rel, got.status_code)
            assert int(prop.findtext("{DAV:}getcontentlength") or -1) == len(got.content)
            modified = parsedate_to_datetime(prop.findtext("{DAV:}getlastmodified") or "")
            files[rel] = (got.content, int(modified.timestamp()))
    return files, folders


def assert_same_trees(local: Path, server, auth, box: str) -> None:
    """The same folders and files, byte for byte, with the same times (whole seconds)."""
    local_files, local_folders = local_tree(local)
    server_files, server_folders = server_tree(server, auth, box)
    assert local_folders == server_folders
    assert sorted(local_files) == sorted(server_files)
    for rel, (data, mtime) in local_files.items():
        assert data == server_files[rel][0], f"{rel}: the bytes differ"
        assert mtime == server_files[rel][1], f"{rel}: local {mtime}, server {server_files[rel][1]}"


# -- the server's access log ------------------------------------------------------


class AccessLog:
    """The access-log lines one account caused between ``mark()`` and ``since()``."""

    def __init__(self, server, user: str) -> None:
        self.server = server
        self.user = user

    def mark(self) -> int:
        return len(self.server.log_text())

    def since(self, offset: int) -> list[tuple[str, str, int]]:
        # Lines are written from a queue in order: once a marker request made
        # after the client finished is in the file, the client's lines are too.
        marker = f"/sync-test-marker/{uuid.uuid4().hex}"
        requests.get(self.server.url + marker, timeout=10)
        text = self.server.log_text(until=re.escape(marker))
        assert marker in text, "the access log did not show the marker request"
        lines = []
        for match in ACCESS.finditer(text[offset:]):
            if match["user"] == self.user:
                path = _readable(match["path"])
                lines.append((match["method"], path, int(match["status"])))
        return lines


def _readable(path: str) -> str:
    """A logged path as sent: the access log writes UTF-8 paths in their WSGI (latin-1) form."""
    try:
        return path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return path


def _dav_requests(lines: list[tuple[str, str, int]], prefix: str) -> list[tuple[str, str, int]]:
    """The requests under ``prefix`` (the sync root), paths relative to it."""
    return [
        (method, path[len(prefix) :].strip("/"), status)
        for method, path, status in lines
        if path == prefix or path.startswith(prefix + "/")
    ]


# -- nextcloudcmd and owncloudcmd -------------------------------------------------


def check_sync_run(result: subprocess.CompletedProcess[str]) -> set[tuple[str, str, str]]:
    """Assert one client run went well; return what it propagated: (instruction, kind, path)."""
    out = result.stdout
    assert result.returncode == 0, out[-5000:]
    failed = [(m["path"], m["status"]) for m in FINISHED.finditer(out) if m["status"] != "Success"]
    assert not failed, f"items not propagated: {failed}\n{out[-5000:]}"
    assert not SEVERE.findall(out), SEVERE.findall(out)
    # Nextcloud's "Could not complete propagation ... with status Success and
    # error: "Unknown error"" after each MKCOL is the client's own quirk (see above).
    warnings = [
        line
        for line in PROPAGATION_WARNING.findall(out)
        if not ((m := FINISHED.search(line)) and m["status"] == "Success")
    ]
    assert not warnings, warnings
    done = set()
    for match in STARTING.finditer(out):
        job = match["job"]
        kind = "upload" if job.startswith("PropagateUploadFile") else JOB_KINDS.get(job, job)
        done.add((match["instruction"], kind, match["path"]))
    return done


def sync_scenario(server, tmp_path: Path, *, client: str, box: str, prefix: str) -> None:
    """Up, down (changed and new on the server), rename and delete locally, twice nothing."""
    user, password = _account(server, f"{client}-user", box)
    auth = (user, password)
    home = tmp_path / "home"
    env = _client_env(home)
    local = tmp_path / "local"
    local.mkdir()
    files = _initial_tree()
    # 50 MB: nextcloudcmd sends it in pieces (Nextcloud's chunked upload),
    # owncloudcmd in one PUT (the server offers no ownCloud chunking).
    files["big50.bin"] = os.urandom(50 * 1000 * 1000)
    _write_tree(local, files)
    log = AccessLog(server, user)

    if client == "nextcloudcmd":
        command = [
            _require("nextcloudcmd"),
            "--non-interactive",
            "-u",
            user,
            "-p",
            password,
            "--path",
            f"/{box}",
            str(local),
            server.url,
        ]
    else:
        exclude = tmp_path / "exclude.lst"  # owncloudcmd stops without an exclude list
        exclude.write_text("")
        command = [
            _require("owncloudcmd"),
            "--non-interactive",
            "--exclude",
            str(exclude),
            "-u",
            user,
            "-p",
            password,
            str(local),
            f"{server.url}/remote.php/webdav/{box}",
        ]

    def sync() -> tuple[set[tuple[str, str, str]], list[tuple[str, str, int]]]:
        offset = log.mark()
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=120,
        )
        propagated = check_sync_run(result)
        return propagated, _dav_requests(log.since(offset), prefix)

    # 1. The local tree goes up, byte for byte, with its modification times.
    offset = log.mark()
    propagated, sent = sync()
    assert propagated == {
        ("NEW", "mkcol", "docs"),
        ("NEW", "mkcol", "sub"),
        ("NEW", "mkcol", "sub/deep"),
        *(("NEW", "upload", rel) for rel in files),
    }
    chunked = {"big50.bin"} if client == "nextcloudcmd" else set()
    whole = sorted(set(files) - chunked)
    assert sorted(p for m, p, s in sent if m == "PUT" and s == 201) == whole
    uploads = f"/remote.php/dav/uploads/{user}/"
    pieces = [(m, p, s) for m, p, s in log.since(offset) if p.startswith(uploads)]
    if chunked:
        assert [s for m, p, s in pieces if m == "MOVE" and p.endswith("/.file")] == [201]
        assert sum(1 for m, _p, s in pieces if m == "PUT" and s == 201) >= 2, pieces
    else:
        assert pieces == []
    assert sorted(p for m, p, s in sent if m == "MKCOL" and s == 201) == ["docs", "sub", "sub/deep"]
    assert all(status < 400 for _m, _p, status in sent), sent
    assert_same_trees(local, server, auth, box)
    stored, _ = server_tree(server, auth, box)
    times = {rel: stored[rel][1] for rel in files}
    assert times == {rel: int(MTIME) + i for i, rel in enumerate(sorted(files))}, "X-OC-Mtime"

    # 2. Changed and new on the server: they come down.
    changed = b"alpha, changed on the server\n"
    new = b"made on the server\n"
    for rel, data in (("a.txt", changed), ("sub/new from server.txt", new)):
        put = requests.put(server.dav(f"{box}/{quote(rel)}"), data=data, auth=auth, timeout=30)
        assert put.status_code in (201, 204), put.text
    propagated, sent = sync()
    assert propagated == {
        ("SYNC", "download", "a.txt"),
        ("NEW", "download", "sub/new from server.txt"),
    }
    assert sorted((m, p) for m, p, _s in sent if m in TRANSFERS) == [
        ("GET", "a.txt"),
        ("GET", "sub/new from server.txt"),
    ]
    assert (local / "a.txt").read_bytes() == changed
    assert (local / "sub/new from server.txt").read_bytes() == new
    assert_same_trees(local, server, auth, box)

    # 3. Renamed and deleted locally: the server does the same (a MOVE, not a new upload).
    (local / "sub/deep/seventy.bin").rename(local / "sub/seventy renamed.bin")
    (local / "sub/one.bin").unlink()
    propagated, sent = sync()
    assert propagated == {
        ("RENAME", "move", "sub/seventy renamed.bin"),
        ("REMOVE", "delete", "sub/one.bin"),
    }
    assert sorted((m, p, s) for m, p, s in sent if m in TRANSFERS) == [
        ("DELETE", "sub/one.bin", 204),
        ("MOVE", "sub/deep/seventy.bin", 201),
    ]
    for gone in ("sub/deep/seventy.bin", "sub/one.bin"):
        answer = requests.get(server.dav(f"{box}/{gone}"), auth=auth, timeout=30)
        assert answer.status_code == 404, gone
    moved = requests.get(server.dav(f"{box}/sub/seventy renamed.bin"), auth=auth, timeout=30)
    assert moved.status_code == 200 and moved.content == files["sub/deep/seventy.bin"]

    # 4. Nothing left to do: only listings (the folders step 3 changed are listed again).
    propagated, sent = sync()
    assert propagated == set()
    assert sent, "the client did not ask the server anything"
    assert {m for m, _p, _s in sent} == {"PROPFIND"}, sent
    assert all(s == 207 for _m, _p, s in sent), sent

    # 5. And again: folder ETags are stable, so one listing of the sync root is all.
    propagated, sent = sync()
    assert propagated == set()
    assert sent == [("PROPFIND", "", 207)]

    assert_same_trees(local, server, auth, box)


def test_nextcloudcmd_syncs_both_ways(shared_server, tmp_path):
    prefix = "/remote.php/dav/files/nextcloudcmd-user/ncbox"
    sync_scenario(shared_server, tmp_path, client="nextcloudcmd", box="ncbox", prefix=prefix)


def test_owncloudcmd_syncs_both_ways(shared_server, tmp_path):
    prefix = "/remote.php/webdav/ocbox"
    sync_scenario(shared_server, tmp_path, client="owncloudcmd", box="ocbox", prefix=prefix)


# -- rclone -----------------------------------------------------------------------

LSL = re.compile(r"^\s*(?P<size>\d+) (?P<time>\S+ \S+) (?P<path>.+)$", re.MULTILINE)


class Rclone:
    """rclone with a config file holding one WebDAV remote, ``dav:``, for ``vendor``."""

    def __init__(self, server, tmp_path: Path, *, vendor: str, user: str, password: str) -> None:
        self.program = _require("rclone")
        self.env = _client_env(tmp_path / "home")
        obscured = subprocess.run(
            [self.program, "obscure", password],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        if vendor == "nextcloud":
            url = f"{server.url}/remote.php/dav/files/{user}"
        else:
            url = f"{server.url}/remote.php/webdav"
        self.config = tmp_path / "rclone.conf"
        self.config.write_text(
            f"[dav]\ntype = webdav\nurl = {url}\nvendor = {vendor}\n"
            f"user = {user}\npass = {obscured}\n"
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.program, "--config", str(self.config), "--retries", "1", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, f"rclone {args}: {result.stdout}\n{result.stderr}"
        return result

    def lsl(self, where: str) -> dict[str, tuple[int, str]]:
        out = self.run("lsl", where).stdout
        return {m["path"]: (int(m["size"]), m["time"]) for m in LSL.finditer(out)}

    def check(self, *args: str) -> tuple[int, dict[str, str], str]:
        """(exit code, {path: "=" same, "*" differs, "+"/"-" missing on one side}, log)."""
        result = self.run("check", "--combined", "-", *args, check=False)
        verdicts = {}
        for line in result.stdout.splitlines():
            mark, _, path = line.partition(" ")
            verdicts[path] = mark
        return result.returncode, verdicts, result.stderr


def _notice(log: str, what: str) -> int | None:
    """The number in rclone's summary line ``NOTICE: <root>: <n> <what>``, None without one."""
    match = re.search(rf"NOTICE: .*: (\d+) {re.escape(what)}$", log, re.MULTILINE)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("vendor", ["nextcloud", "owncloud"])
def test_rclone_copies_syncs_and_checks(shared_server, tmp_path, vendor):
    server = shared_server
    box = f"rclone-{vendor}"
    user, password = _account(server, f"rclone-{vendor}-user", box)
    auth = (user, password)
    rclone = Rclone(server, tmp_path, vendor=vendor, user=user, password=password)
    log = AccessLog(server, user)
    remote = f"dav:{box}"
    if vendor == "nextcloud":
        prefix = f"/remote.php/dav/files/{user}/{box}"
    else:
        prefix = f"/remote.php/webdav/{box}"
    one, two = tmp_path / "one", tmp_path / "two"
    files = _initial_tree()
    _write_tree(one, files)

    # copy up: every file, byte for byte, its time kept (X-OC-Mtime, whole seconds).
    rclone.run("copy", str(one), remote)
    assert_same_trees(one, server, auth, box)
    local, uploaded = rclone.lsl(str(one)), rclone.lsl(remote)
    assert sorted(uploaded) == sorted(local) == sorted(files)
    for index, rel in enumerate(sorted(files)):
        size, when = uploaded[rel]
        assert size == local[rel][0] == len(files[rel])
        assert local[rel][1] == f"2020-09-13 12:26:{40 + index}.250000000", rel
        assert when == f"2020-09-13 12:26:{40 + index}.000000000", rel

    # A second copy finds nothing to do and sends nothing.
    offset = log.mark()
    rclone.run("copy", str(one), remote)
    assert {m for m, _p, _s in log.since(offset)} == {"PROPFIND"}

    # sync down into an empty folder: the same tree, the server's times.
    rclone.run("sync", remote, str(two))
    assert_same_trees(two, server, auth, box)
    assert rclone.lsl(str(two)) == uploaded

    # Changed, added and deleted on one local side, synced up.
    (one / "a.txt").write_bytes(b"alpha, changed locally\n")
    (one / "docs/added locally.txt").write_bytes(b"new here\n")
    (one / "sub/one.bin").unlink()
    offset = log.mark()
    rclone.run("sync", str(one), remote)
    sent = log.since(offset)
    # rclone makes sure a folder exists by MKCOL; 405 says it does.
    assert {(p, s) for m, p, s in sent if m == "MKCOL"} <= {
        (f"{prefix}/", 405),
        (f"{prefix}/docs/", 405),
    }, sent
    changes = sorted((m, p, s) for m, p, s in sent if m in TRANSFERS and m != "MKCOL")
    assert changes == [
        ("DELETE", f"{prefix}/sub/one.bin", 204),
        ("PUT", f"{prefix}/a.txt", 204),
        ("PUT", f"{prefix}/docs/added locally.txt", 201),
    ]
    assert_same_trees(one, server, auth, box)

    # Changed and added on the server, synced down into both local folders.
    for rel, data in ((NON_ASCII, b"changed on the server\n"), ("sub/deep/new.bin", b"\0" * 3)):
        put = requests.put(server.dav(f"{box}/{quote(rel)}"), data=data, auth=auth, timeout=30)
        assert put.status_code in (201, 204), put.text
    rclone.run("sync", remote, str(one))
    rclone.run("sync", remote, str(two))
    assert_same_trees(one, server, auth, box)
    assert_same_trees(two, server, auth, box)
    names = sorted(local_tree(one)[0])
    assert "sub/one.bin" not in names and "sub/deep/new.bin" in names

    # check, both ways: sizes and checksums agree (the server's oc:checksums, SHA1
    # and MD5 of every upload, also of the ones made without rclone).
    for source, destination in ((str(one), remote), (remote, str(two))):
        code, verdicts, text = rclone.check(source, destination)
        assert code == 0, text
        assert verdicts == dict.fromkeys(names, "="), verdicts
        assert _notice(text, "differences found") == 0, text
        assert _notice(text, "hashes could not be checked") is None, text
        assert _notice(text, "matching files") == len(names), text

    # A file of another size on one side: check fails and names it.
    with open(two / "docs/notes.txt", "ab") as extra:
        extra.write(b"one more line\n")
    code, verdicts, text = rclone.check(remote, str(two))
    assert code == 1, text
    assert verdicts == {**dict.fromkeys(names, "="), "docs/notes.txt": "*"}
    assert "ERROR : docs/notes.txt: sizes differ" in text
    assert _notice(text, "differences found") == 1, text

    # The same size and time, other bytes: the checksums tell.
    big = bytearray((one / "big.bin").read_bytes())
    big[1000] ^= 0xFF
    stat = (one / "big.bin").stat()
    (one / "big.bin").write_bytes(big)
    os.utime(one / "big.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, verdicts, text = rclone.check(str(one), remote)
    assert code == 1, text
    assert verdicts == {**dict.fromkeys(names, "="), "big.bin": "*"}
    assert _notice(text, "differences found") == 1, text


def test_access_log_names_non_ascii_paths_as_sent(shared_server):
    # Seen with every client above; a plain PUT shows it without one.
    user, password = _account(shared_server, "log-user", "logbox")
    log = AccessLog(shared_server, user)
    offset = log.mark()
    url = f"{shared_server.url}/remote.php/webdav/logbox/{quote(NON_ASCII)}"
    assert requests.put(url, data=b"x", auth=(user, password), timeout=30).status_code == 201
    log.since(offset)  # waits until the line is written
    text = shared_server.log_text()[offset:]
    assert f'"PUT /remote.php/webdav/logbox/{NON_ASCII}" 201' in text, text
