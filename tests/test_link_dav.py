"""Share links over WebDAV against a real ``davbox serve``, with real clients.

Links are made as an administrator would, with ``davbox share create`` (the
token is read from the printed ``link:`` URL), and used over
``/s/<token>/dav/`` and ``/public.php/webdav/`` with curl, cadaver, litmus and
requests. What the link does is checked from outside and through a member's
account over ``/dav/``:

- drop links see nothing (no listing, no reading, no changing), add files
  without ever replacing one (a taken name is stored as "name (2).ext" with
  the very same answer), only in the link's own folder, also by LOCK, PUT,
  UNLOCK as Explorer and Finder do; no answer names the mailbox or the place
  of the folder;
- read links list and serve byte-identical files and change nothing, a file
  link serves that file only, and ``--max-downloads`` counts every answer
  that sends a file from its first byte (no Range form is free, parallel
  downloads cannot exceed it);
- write links pass litmus and cannot leave their folder or remove it;
- link passwords (any user name on /s/, the token as user name on
  /public.php), throttled guessing, the one 404 of every unusable token,
  policies applied as to members (size, types with content check, quota; the
  twofactor policy is not for links), upload windows, and events in the
  server log without tokens or passwords.

The module shares one server (tests use their own mailboxes); its policies
limit the ``pol*`` mailboxes (1 MB files, pdf and txt with a content check),
the ``quota*`` mailboxes (1 MB in all) and put ``tf*`` under two-factor login.
"""

from __future__ import annotations

import http.client
import itertools
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from davbox import accounts
from davbox.db.models import ShareLink
from tests.davserver import PASSWORD, DavboxServer

CONFIG = """
auth:
  throttle_address_failures: 100000
policies:
  - name: pol-size
    type: size
    mailboxes: ["pol*"]
    max_file_size: 1MB
  - name: pol-types
    type: extensions
    mailboxes: ["pol*"]
    allow: [pdf, txt]
    verify_content: true
  - name: small-quota
    type: quota
    mailboxes: ["quota*"]
    max_bytes: 1MB
  - name: tf-needs-code
    type: twofactor
    mailboxes: ["tf*"]
"""
OWNER = ("owner", PASSWORD)
LINK_PASSWORD = "a-link-password-for-tests"
NOT_FOUND = b"404 Not Found: this link does not exist (any more)\n"
LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>explorer</D:owner></D:lockinfo>"
)
PROPPATCH_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
    "<D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"
)
PDF = b"%PDF-1.4\n% a small pdf\n" + b"0" * 2000
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 2000
SUMMARY = re.compile(r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed")
CREATED = re.compile(r"^created (\w+) link (\d+) to (\S+)$", re.M)
LINK_URL = re.compile(r"^link: (\S+)/s/([A-Za-z0-9_-]+)$", re.M)
_numbers = itertools.count(1)
# Every token and link password handed out here: none may reach the server's log.
SECRETS: set[str] = {LINK_PASSWORD}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    config = tmp_path_factory.mktemp("cfg") / "davbox.yaml"
    config.write_text(CONFIG)
    srv = DavboxServer(tmp_path_factory.mktemp("linkdav") / "data", config=config).start()
    srv.add_user(*OWNER)
    yield srv
    srv.stop()


# -- helpers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    """A link as ``davbox share create`` printed it."""

    id: int
    token: str
    server: DavboxServer

    @property
    def prefix(self) -> str:
        return f"/s/{self.token}/dav/"

    def url(self, path: str = "") -> str:
        return self.server.url + self.prefix + path


def share(
    server: DavboxServer, target: str, permission: str, *options: str, password: str | None = None
) -> Shared:
    args = ["share", "create", target, "--permission", permission, *options]
    if password is not None:
        args.append("--password-stdin")
    out = server.cli(*args, input=f"{password}\n" if password is not None else None).stdout
    created, url = CREATED.search(out), LINK_URL.search(out)
    assert created and url, out
    assert created.group(1) == permission and created.group(3).rstrip("/") == target
    assert f"webdav: {url.group(0)[6:]}/dav/" in out
    SECRETS.add(url.group(2))
    return Shared(int(created.group(2)), url.group(2), server)


def mailbox(server: DavboxServer, prefix: str = "m", *folders: str) -> str:
    """A new mailbox managed by ``owner``, with these folders made over /dav/."""
    name = f"{prefix}{next(_numbers)}x{secrets.token_hex(2)}"
    server.mailbox(name, owner="manager")
    for folder in folders:
        made = requests.request("MKCOL", server.dav(f"{name}/{folder}"), auth=OWNER, timeout=10)
        assert made.status_code == 201, made.text
    return name


def get_as_owner(server: DavboxServer, path: str) -> bytes:
    got = requests.get(server.dav(path), auth=OWNER, timeout=10)
    assert got.status_code == 200, (path, got.status_code)
    return got.content


def put_as_owner(server: DavboxServer, path: str, data: bytes) -> None:
    answer = requests.put(server.dav(path), data=data, auth=OWNER, timeout=30)
    assert answer.status_code in (201, 204), answer.text


def owner_view(server: DavboxServer, folder: str) -> dict[str, bytes]:
    """The files of a folder as the mailbox's manager sees them over /dav/."""
    listing = requests.request(
        "PROPFIND", server.dav(folder + "/"), headers={"Depth": "1"}, auth=OWNER, timeout=10
    )
    assert listing.status_code == 207
    base = "/dav/" + folder.strip("/") + "/"
    files = {}
    for href in hrefs(listing.content):
        name = requests.utils.unquote(href)[len(base) :]
        if name and not name.endswith("/"):
            files[name] = requests.get(
                server.dav(f"{folder}/{name}"), auth=OWNER, timeout=10
            ).content
    return files


def hrefs(body: bytes) -> list[str]:
    """The paths a multistatus or lock answer names (lock tokens left out)."""
    if not body.startswith(b"<?xml"):
        return []
    return [
        h.text or ""
        for h in ET.fromstring(body).iter("{DAV:}href")
        if not (h.text or "").startswith("opaquelocktoken:")
    ]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # of the final response, names in lower case
    raw_headers: bytes
    body: bytes

    def same_as(self, other: Answer, *, body: bool = True) -> bool:
        """Equal but for Date and the ETag's value (and the body, if ``body`` is false)."""
        mine = {k: v for k, v in self.headers.items() if k not in ("date", "etag")}
        theirs = {k: v for k, v in other.headers.items() if k not in ("date", "etag")}
        return (
            self.status == other.status
            and mine == theirs
            and ("etag" in self.headers) == ("etag" in other.headers)
            and (self.body == other.body or not body)
        )


def curl(*args: str, tmp: Path) -> Answer:
    """Run Debian's curl (paths sent as written) and return its last answer."""
    out, head = tmp / "curl-body", tmp / "curl-head"
    result = subprocess.run(
        ["curl", "-sS", "--path-as-is", "-o", str(out), "-D", str(head), *args],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    raw = head.read_bytes()
    last = raw.strip().split(b"\r\n\r\n")[-1]
    lines = last.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, last, out.read_bytes())


def raw_request(
    server: DavboxServer, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """A request with its path exactly as written ("..", "%2e%2e"): requests would normalise it."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def propfind(url: str, depth: str = "1", **kwargs: object) -> requests.Response:
    return requests.request("PROPFIND", url, headers={"Depth": depth}, timeout=10, **kwargs)


def downloads_of(server: DavboxServer, link: Shared) -> int:
    with server.database().session() as session:
        return session.execute(
            select(ShareLink.downloads).where(ShareLink.id == link.id)
        ).scalar_one()


def server_log(server: DavboxServer, until: str | None = None) -> str:
    """The server's log, once a line matches ``until`` (log lines are written from a queue)."""
    return server.log_text(until)


def field(line: str, name: str) -> str:
    """A text field of an event's log line: name='value'."""
    found = re.search(rf"\b{name}='([^']*)'", line)
    assert found, line
    return found.group(1)


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed (scripts/test.sh installs it)")
    return path


# -- drop links --------------------------------------------------------------------------


@pytest.mark.clients
def test_drop_link_with_curl_sees_nothing_and_replaces_nothing(server, tmp_path):
    box = mailbox(server, "drop", "cases", "cases/inbox")
    original = os.urandom(4000)
    put_as_owner(server, f"{box}/cases/inbox/report.pdf", original)
    link = share(server, f"{box}/cases/inbox", "drop")
    answers: list[Answer] = []

    def c(*args: str) -> Answer:
        answers.append(curl(*args, tmp=tmp_path))
        return answers[-1]

    for depth in ("0", "1"):
        found = c("-X", "PROPFIND", "-H", f"Depth: {depth}", link.url())
        assert found.status == 207
        assert hrefs(found.body) == [link.prefix], "no members are listed"
    # Reading: an existing file gets exactly the answer of a missing one.
    for method in ("GET", "HEAD"):
        option = ["-I"] if method == "HEAD" else []  # curl -I writes the headers as the body
        there = c(*option, link.url("report.pdf"))
        missing = c(*option, link.url("nothing.pdf"))
        assert there.status == 404 and there.same_as(missing, body=method == "GET"), method
    # Changing or probing: refused alike.
    changes = {
        "DELETE": [],
        "MOVE": ["-H", f"Destination: {link.url('moved.pdf')}"],
        "COPY": ["-H", f"Destination: {link.url('copied.pdf')}"],
        "PROPPATCH": ["-H", "Content-Type: application/xml", "--data-binary", PROPPATCH_BODY],
    }
    for method, extra in changes.items():
        there = c("-X", method, *extra, link.url("report.pdf"))
        missing = c("-X", method, *extra, link.url("nothing.pdf"))
        assert there.status == 404 and there.same_as(missing), method

    (tmp_path / "new.txt").write_bytes(b"a new file\n")
    assert c("-T", str(tmp_path / "new.txt"), link.url("new.txt")).status == 201
    replacement = PDF + b"from the drop link"
    (tmp_path / "replacement.pdf").write_bytes(replacement)
    taken = c("-T", str(tmp_path / "replacement.pdf"), link.url("report.pdf"))
    untaken = c("-T", str(tmp_path / "replacement.pdf"), link.url("fresh.pdf"))
    assert taken.status == 201
    assert taken.same_as(untaken), "a taken name is answered exactly like a new one"

    # Explorer and Finder: LOCK a new name, PUT with the lock token, UNLOCK.
    locked = c(
        "-X",
        "LOCK",
        "-H",
        "Content-Type: application/xml",
        "-H",
        "Timeout: Second-3600",
        "--data-binary",
        LOCK_BODY,
        link.url("explorer.txt"),
    )
    assert locked.status == 201
    assert hrefs(locked.body) == [link.prefix + "explorer.txt"]  # the lock root
    lock_token = locked.headers["lock-token"].strip("<>")
    (tmp_path / "explorer.txt").write_bytes(b"written under a lock\n")
    written = c(
        "-T",
        str(tmp_path / "explorer.txt"),
        "-H",
        f"If: (<{lock_token}>)",
        link.url("explorer.txt"),
    )
    assert written.status in (201, 204), written.body
    assert (
        c("-X", "UNLOCK", "-H", f"Lock-Token: <{lock_token}>", link.url("explorer.txt")).status
        == 204
    )

    assert owner_view(server, f"{box}/cases/inbox") == {
        "report.pdf": original,  # byte-identical
        "report (2).pdf": replacement,
        "fresh.pdf": replacement,
        "new.txt": b"a new file\n",
        "explorer.txt": b"written under a lock\n",
    }
    # No answer names the mailbox or where the folder sits; hrefs stay under the link.
    for answer in answers:
        seen = answer.raw_headers + answer.body
        assert box.encode() not in seen and b"cases" not in seen, seen
        for href in hrefs(answer.body):
            assert href.startswith(link.prefix) and "inbox" not in href, href


@pytest.mark.clients
def test_drop_link_with_cadaver_and_a_link_password(server, tmp_path):
    cadaver = require("cadaver")
    box = mailbox(server, "cad", "inbox")
    put_as_owner(server, f"{box}/inbox/a.txt", b"original\n")
    link = share(server, f"{box}/inbox", "drop", password=LINK_PASSWORD)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    netrc = home / ".netrc"
    netrc.write_text(f"machine 127.0.0.1 login anyone password {LINK_PASSWORD}\n")
    netrc.chmod(0o600)
    (work / "local.txt").write_bytes(b"from cadaver\n")
    script = [
        "ls",
        "put local.txt a.txt",
        "put local.txt b.txt",
        "get a.txt got.txt",
        "delete a.txt",
        "move b.txt c.txt",
        "copy b.txt d.txt",
        "propset b.txt colour blue",
        "mkcol sub",
        "lock e.txt",
        "put local.txt e.txt",
        "unlock e.txt",
        "ls",
        "quit",
    ]
    result = subprocess.run(
        [cadaver, link.url()],
        input="\n".join(script) + "\n",
        capture_output=True,
        text=True,
        cwd=work,
        timeout=60,
        env={**os.environ, "HOME": str(home)},
    )
    out = result.stdout
    at = link.prefix
    # cadaver exits 0 even when a command fails: its output is the verdict.
    expected = [
        f"Uploading local.txt to `{at}a.txt': [.. succeeded.",
        f"Uploading local.txt to `{at}b.txt': [.. succeeded.",
        "Deleting `a.txt': failed:\n404 Not Found",
        f"Moving `{at}b.txt' to `{at}c.txt':  failed:\n404 Not Found",
        f"Copying `{at}b.txt' to `{at}d.txt':  failed:\n404 Not Found",
        "Setting property on `b.txt': failed:\n404 Not Found",
        "Creating `sub': failed:\n403 Forbidden",
        "Locking `e.txt': succeeded.",
        f"Uploading local.txt to `{at}e.txt': [.. succeeded.",
        "Unlocking `e.txt': succeeded.",
    ]
    for line in expected:
        assert line in out, f"missing {line!r} in:\n{out}"
    assert re.search(rf"Downloading `{at}a.txt' to got.txt: \[\.+\]? failed:\n404 Not Found", out)
    assert out.count(f"Listing collection `{at}': collection is empty.") == 2, out
    assert "Authentication required" not in out, out
    assert owner_view(server, f"{box}/inbox") == {
        "a.txt": b"original\n",
        "a (2).txt": b"from cadaver\n",
        "b.txt": b"from cadaver\n",
        "e.txt": b"from cadaver\n",
    }


def test_drop_link_puts_only_into_its_own_folder(server):
    """Subfolders are invisible to a drop link: whether one exists, the answer is the same."""
    box = mailbox(server, "dsub", "in", "in/private")
    link = share(server, f"{box}/in", "drop")
    answers = {
        path: requests.put(link.url(path), data=b"x", timeout=10)
        for path in ("private/x.txt", "no-such-folder/x.txt", "private/deeper/x.txt")
    }
    assert {a.status_code for a in answers.values()} == {403}
    assert len({a.content for a in answers.values()}) == 1
    assert b"into its folder, not into folders inside it" in answers["private/x.txt"].content
    assert owner_view(server, f"{box}/in/private") == {}


def test_a_refusal_names_the_name_that_was_sent_not_the_free_one(server):
    """Content refused under a taken name must not say "(2)": that would tell the name exists."""
    refusals = []
    for taken in (True, False):
        box = mailbox(server, "pol")
        if taken:
            put_as_owner(server, f"{box}/doc.pdf", PDF)
        link = share(server, box, "drop")
        refused = requests.put(link.url("doc.pdf"), data=EXE, timeout=10)
        assert refused.status_code == 415
        refusals.append(refused.content.replace(link.token.encode(), b"TOKEN"))
    assert refusals[0] == refusals[1]
    assert b"the content of 'doc.pdf' is not a .pdf file" in refusals[0]


def test_lock_tells_nothing_about_taken_names(server):
    box = mailbox(server, "dlock")
    put_as_owner(server, f"{box}/taken.txt", b"x")
    link = share(server, box, "drop")
    answers = [
        requests.request("LOCK", link.url(name), data=LOCK_BODY, timeout=10).status_code
        for name in ("taken.txt", "new.txt")
    ]
    assert answers[0] == answers[1]


def test_explorer_drops_a_file_whose_name_is_taken(server):
    """LOCK, PUT with the token, UNLOCK of a taken name: stored beside it, the original kept."""
    box = mailbox(server, "dlock2")
    put_as_owner(server, f"{box}/report.pdf", b"%PDF-1.4 original")
    link = share(server, box, "drop")
    url = link.url("report.pdf")
    locked = requests.request("LOCK", url, data=LOCK_BODY, timeout=10)
    assert locked.status_code == 201
    assert "report.pdf</" in locked.text and "(2)" not in locked.text, locked.text
    token = locked.headers["Lock-Token"]
    put = requests.put(url, data=b"%PDF-1.4 dropped", headers={"If": f"({token})"}, timeout=10)
    assert put.status_code in (201, 204)
    unlocked = requests.request("UNLOCK", url, headers={"Lock-Token": token}, timeout=10)
    assert unlocked.status_code == 204
    assert get_as_owner(server, f"{box}/report.pdf") == b"%PDF-1.4 original"
    assert get_as_owner(server, f"{box}/report (2).pdf") == b"%PDF-1.4 dropped", owner_view(
        server, box
    )


def test_a_link_to_a_whole_mailbox_shows_neither_its_name_nor_its_usage(server):
    box = mailbox(server, "whole", "sub")
    put_as_owner(server, f"{box}/a.txt", b"x" * 1000)
    for permission in ("read", "drop", "write"):
        link = share(server, box, permission)
        for depth in ("0", "1"):
            found = propfind(link.url(), depth)
            assert found.status_code == 207
            assert box not in found.text, (permission, found.text)
            assert "quota-used-bytes" not in found.text, "usage of the whole mailbox"
            top = ET.fromstring(found.content).find("{DAV:}response")
            assert top is not None and top.findtext(".//{DAV:}displayname") == "Shared files"
    as_member = propfind(server.dav(f"{box}/"), "0", auth=OWNER)
    assert f"<d:displayname>{box}</d:displayname>" in as_member.text
    assert "<d:quota-used-bytes>1000</d:quota-used-bytes>" in as_member.text


# -- read links ---------------------------------------------------------------------------


def test_read_link_lists_serves_and_changes_nothing(server):
    box = mailbox(server, "read", "docs", "docs/sub")
    files = {"a.bin": os.urandom(300_000), "b.txt": b"bee\n", "sub/c.txt": b"sea\n"}
    for name, data in files.items():
        put_as_owner(server, f"{box}/docs/{name}", data)
    link = share(server, f"{box}/docs", "read")
    listing = propfind(link.url())
    assert listing.status_code == 207
    assert sorted(hrefs(listing.content)) == [
        link.prefix + p for p in ("", "a.bin", "b.txt", "sub/")
    ]
    for name, data in files.items():
        got = requests.get(link.url(name), timeout=10)
        assert got.status_code == 200 and got.content == data

    writes = [
        ("PUT", "new.txt", {}, b"x"),
        ("PUT", "b.txt", {}, b"x"),
        ("DELETE", "b.txt", {}, None),
        ("DELETE", "", {}, None),
        ("MKCOL", "new", {}, None),
        ("MOVE", "b.txt", {"Destination": link.url("moved.txt")}, None),
        ("COPY", "b.txt", {"Destination": link.url("copied.txt")}, None),
        ("PROPPATCH", "b.txt", {}, PROPPATCH_BODY.encode()),
        ("LOCK", "b.txt", {}, LOCK_BODY.encode()),
        ("LOCK", "new.txt", {}, LOCK_BODY.encode()),
    ]
    for method, path, headers, body in writes:
        answer = requests.request(method, link.url(path), headers=headers, data=body, timeout=10)
        assert answer.status_code == 403, (method, path, answer.text)
        assert box not in answer.text
    assert owner_view(server, f"{box}/docs") == {k: v for k, v in files.items() if "/" not in k}
    assert owner_view(server, f"{box}/docs/sub") == {"c.txt": b"sea\n"}


def test_read_link_to_one_file_serves_that_file_only(server):
    box = mailbox(server, "one", "docs")
    one, two = os.urandom(50_000), os.urandom(10)
    put_as_owner(server, f"{box}/docs/one.pdf", one)
    put_as_owner(server, f"{box}/docs/two.pdf", two)
    link = share(server, f"{box}/docs/one.pdf", "read")
    got = requests.get(link.url(), timeout=10)
    assert got.status_code == 200 and got.content == one
    for depth in ("0", "1"):
        found = propfind(link.url(), depth)
        assert found.status_code == 207 and hrefs(found.content) == [link.prefix]
    for path in ("two.pdf", "one.pdf", "x/"):
        assert requests.get(link.url(path), timeout=10).content == NOT_FOUND, path
    assert raw_request(server, "GET", link.prefix + "../two.pdf") == (404, NOT_FOUND)
    assert raw_request(server, "GET", link.prefix + "%2e%2e/two.pdf") == (404, NOT_FOUND)


def test_max_downloads_counts_whole_downloads_only(server):
    box = mailbox(server, "lim", "docs")
    data = os.urandom(100_000)
    put_as_owner(server, f"{box}/docs/f.bin", data)
    link = share(server, f"{box}/docs", "read", "--max-downloads", "2")
    for _ in range(3):  # continuing a download is free
        part = requests.get(link.url("f.bin"), headers={"Range": "bytes=10-20"}, timeout=10)
        assert part.status_code == 206 and part.content == data[10:21]
    assert requests.head(link.url("f.bin"), timeout=10).status_code == 200
    assert propfind(link.url()).status_code == 207
    assert downloads_of(server, link) == 0
    for _ in range(2):
        got = requests.get(link.url("f.bin"), timeout=10)
        assert got.status_code == 200 and got.content == data
    third = requests.get(link.url("f.bin"), timeout=10)
    assert (third.status_code, third.content) == (404, NOT_FOUND)
    assert propfind(link.url()).content == NOT_FOUND, "a used-up link is gone entirely"


def test_no_range_form_gets_the_first_byte_for_free(server):
    """Whatever the Range header, an answer that sends byte 0 is a download."""
    box = mailbox(server, "rng", "docs")
    data = os.urandom(100_000)
    put_as_owner(server, f"{box}/docs/f.bin", data)
    link = share(server, f"{box}/docs", "read", "--max-downloads", "100")
    etag = requests.head(link.url("f.bin"), timeout=10).headers["ETag"]
    whole = [
        {"Range": "bytes=0-"},
        {"Range": "bytes=0-9"},
        {"Range": f"bytes=-{len(data)}"},  # the last N bytes: all of them
        {"Range": "bytes=-99999999"},
        {"Range": "bytes=00-"},
        {"Range": "BYTES=0-"},
        {"Range": "bytes= 0-"},
        {"Range": "bytes=1-,0-"},  # merged into one range from 0
        {"Range": "bytes=5-", "If-Range": '"not-the-etag"'},  # If-Range fails: whole file
        {"Range": "bytes=5-", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"},
    ]
    continued = [
        {"Range": "bytes=5-"},
        {"Range": "bytes=5-", "If-Range": etag},  # a resumed download
        {"Range": "bytes=50000-,0-10"},  # WsgiDAV sends one range: not from 0
    ]
    for headers in whole + continued:
        before = downloads_of(server, link)
        got = requests.get(link.url("f.bin"), headers=headers, timeout=10)
        assert got.status_code in (200, 206), headers
        first = re.match(r"bytes (\d+)-", got.headers.get("Content-Range", "bytes 0-"))
        assert first is not None
        start = int(first.group(1))
        assert got.content == data[start : start + len(got.content)]
        assert (start == 0) == (headers in whole), (headers, start)
        assert downloads_of(server, link) == before + (start == 0), headers


def test_parallel_downloads_cannot_exceed_max_downloads(server):
    box = mailbox(server, "par", "docs")
    data = os.urandom(2_000_000)
    put_as_owner(server, f"{box}/docs/big.bin", data)
    link = share(server, f"{box}/docs", "read", "--max-downloads", "3")
    start = threading.Barrier(16)
    results: list[tuple[int, bool]] = []

    def fetch() -> None:
        start.wait()
        got = requests.get(link.url("big.bin"), timeout=30)
        results.append((got.status_code, got.content == data))

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [(200, True)] * 3 + [(404, False)] * 13
    assert downloads_of(server, link) == 3
    # Those refused while their answer began are refusals, not downloads, in the log.
    time.sleep(0.2)
    events = [line for line in server_log(server).splitlines() if f"mailbox='{box}'" in line]
    downloads = [line for line in events if "davbox.events: download " in line]
    assert len(downloads) == 3 and all("status=200" in line for line in downloads)
    late = [line for line in events if "rule='link-max-downloads'" in line]
    assert all("access-refused" in line and "status=404" in line for line in late)


# -- write links ----------------------------------------------------------------------------


@pytest.mark.clients
@pytest.mark.parametrize("via", ["s", "public.php"])
def test_litmus_passes_all_104_tests_through_a_write_link(server, tmp_path, via):
    litmus = require("litmus")
    box = mailbox(server, "lit", "work")
    link = share(server, f"{box}/work", "write", password=LINK_PASSWORD)
    if via == "s":
        url, user = link.url(), "anyone"
    else:
        url, user = f"{server.url}/public.php/webdav/", link.token
    started = time.monotonic()
    result = subprocess.run(
        [litmus, "-k", url, user, LINK_PASSWORD],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    print(f"litmus through a {via} link: {time.monotonic() - started:.1f} s")
    summaries = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in SUMMARY.findall(result.stdout)}
    assert set(summaries) == {"basic", "copymove", "props", "locks", "http"}, result.stdout
    totals = tuple(sum(s[i] for s in summaries.values()) for i in range(3))
    assert totals == (104, 104, 0), result.stdout
    assert owner_view(server, f"{box}/work") == {}, "litmus cleans up after itself"


OUTSIDE_PATHS = [
    "../secret.txt",
    "%2e%2e/secret.txt",
    "%2E%2E/secret.txt",
    ".%2e/secret.txt",
    "sub/../../secret.txt",
    "sub/%2e%2e/%2e%2e/secret.txt",
    "/../secret.txt",
]


SECRET = b"TOP SECRET CONTENT"


def test_write_link_cannot_reach_outside_its_folder(server):
    box = mailbox(server, "wr", "shared", "shared/sub")
    put_as_owner(server, f"{box}/secret.txt", SECRET)
    put_as_owner(server, f"{box}/shared/in.txt", b"inside")
    link = share(server, f"{box}/shared", "write")
    other = share(server, f"{box}/shared/sub", "write")
    for path in OUTSIDE_PATHS:
        for method in ("GET", "PROPFIND", "DELETE", "PUT"):
            status, body = raw_request(server, method, link.prefix + path, {"Depth": "0"})
            assert status in (400, 404), (method, path, status, body)
            assert SECRET not in body
    # An encoded slash stays in the name (cheroot keeps %2F): a file inside the folder.
    assert raw_request(server, "PUT", link.prefix + "..%2fsecret.txt")[0] == 201
    for public in ("/public.php/webdav/../secret.txt", "/public.php/webdav/%2e%2e/secret.txt"):
        status, _ = raw_request(
            server,
            "DELETE",
            public,
            {"Authorization": requests.auth._basic_auth_str(link.token, "")},
        )
        assert status in (400, 404), public

    destinations = [
        link.url("../stolen.txt"),
        link.url("%2e%2e/stolen.txt"),
        link.url("sub/../../stolen.txt"),
        server.dav(f"{box}/stolen.txt"),
        f"/dav/{box}/stolen.txt",
        f"{server.url}/s/{link.token}/stolen.txt",
        other.url("stolen.txt"),  # another link into the same mailbox
        f"{server.url}/public.php/webdav/stolen.txt",
        f"{server.url}/s/{link.token}/dav",  # the link's folder itself
        "http://elsewhere.example" + link.prefix + "stolen.txt",
    ]
    for destination in destinations:
        for method in ("COPY", "MOVE"):
            status, body = raw_request(
                server,
                method,
                link.prefix + "in.txt",
                {"Destination": destination, "Overwrite": "T"},
            )
            assert status in (403, 409, 502), (method, destination, status, body)
    wanted = "rule='link-destination' reason='the destination must be inside this link'"
    assert wanted in server.log_text(until=re.escape(wanted)), (
        "refused destinations are access-refused events"
    )
    # The link's folder itself stays: it can be neither deleted nor moved away.
    assert requests.delete(link.url(), timeout=10).status_code == 403
    moved = requests.request(
        "MOVE", link.url(), headers={"Destination": link.url("sub/shared/")}, timeout=10
    )
    assert moved.status_code in (403, 409)
    assert owner_view(server, box) == {"secret.txt": SECRET}
    assert owner_view(server, f"{box}/shared") == {"in.txt": b"inside", "..%2Fsecret.txt": b""}
    assert owner_view(server, f"{box}/shared/sub") == {}


# -- /public.php/webdav/ --------------------------------------------------------------------


def test_public_php_with_the_token_as_user_name(server):
    box = mailbox(server, "pub", "docs", "in")
    put_as_owner(server, f"{box}/docs/a.txt", b"public a\n")
    read = share(server, f"{box}/docs", "read")
    drop = share(server, f"{box}/in", "drop", password=LINK_PASSWORD)
    revoked = share(server, f"{box}/docs", "read")
    server.cli("share", "revoke", str(revoked.id))
    public = f"{server.url}/public.php/webdav/"

    listing = propfind(public, auth=(read.token, ""))
    assert listing.status_code == 207
    assert sorted(hrefs(listing.content)) == ["/public.php/webdav/", "/public.php/webdav/a.txt"]
    assert (
        requests.get(public + "a.txt", auth=(read.token, ""), timeout=10).content == b"public a\n"
    )
    dropped = requests.put(
        public + "new.txt", data=b"dropped\n", auth=(drop.token, LINK_PASSWORD), timeout=10
    )
    assert dropped.status_code == 201
    assert owner_view(server, f"{box}/in") == {"new.txt": b"dropped\n"}
    assert propfind(public, auth=(drop.token, LINK_PASSWORD)).status_code == 207

    wrong_tokens = [
        propfind(public, auth=(token, password))
        for token, password in [
            (secrets.token_urlsafe(24), ""),
            (secrets.token_urlsafe(24), LINK_PASSWORD),
            (read.token[:-1] + ("A" if read.token[-1] != "A" else "B"), ""),
            (revoked.token, ""),
            ("x", "y"),
        ]
    ]
    assert {a.status_code for a in wrong_tokens} == {401}
    assert len({a.content for a in wrong_tokens}) == 1
    wrong_password = propfind(public, auth=(drop.token, "not-the-password"))
    assert wrong_password.status_code == 401
    bare = propfind(public)
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith("Basic realm=")


# -- link passwords -----------------------------------------------------------------------


def test_link_password_over_s_dav(server):
    box = mailbox(server, "pw", "docs")
    link = share(server, f"{box}/docs", "read", password=LINK_PASSWORD)
    bare = propfind(link.url())
    assert bare.status_code == 401
    assert bare.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert propfind(link.url(), auth=("anyone", "not-the-password")).status_code == 401
    for user in ("anyone", "x", link.token):
        assert propfind(link.url(), auth=(user, LINK_PASSWORD)).status_code == 207


def test_password_guessing_is_throttled(server):
    box = mailbox(server, "guess", "docs")
    link = share(server, f"{box}/docs", "read", password=LINK_PASSWORD)
    known = share(server, f"{box}/docs", "read", password=LINK_PASSWORD)
    assert propfind(known.url(), auth=("me", LINK_PASSWORD)).status_code == 207
    for guessed in (known, link):  # the 429s below come within 2 s of the last guess
        for n in range(10):  # auth.throttle_account_failures, counted per link
            assert propfind(guessed.url(), auth=("x", f"guess-number-{n}")).status_code == 401
    for answer in (
        propfind(link.url(), auth=("x", LINK_PASSWORD)),
        propfind(f"{server.url}/public.php/webdav/", auth=(link.token, LINK_PASSWORD)),
    ):
        assert answer.status_code == 429, "not even the right password is checked now"
        assert int(answer.headers["Retry-After"]) >= 1
        assert "too many failed logins" in answer.text
    # A password this link already accepted keeps working (as for accounts: a
    # known good credential is not locked out by someone else's guessing).
    assert propfind(known.url(), auth=("me", LINK_PASSWORD)).status_code == 207
    log = server_log(
        server,
        until=rf"outcome='throttled'.*actor='link-{link.id}'|actor='link-{link.id}'.*outcome='throttled'",
    )
    refused = [
        line
        for line in log.splitlines()
        if "login-refused" in line and f"actor='link-{link.id}'" in line
    ]
    assert all("actor_kind='link'" in line for line in refused)
    assert sum("outcome='wrong'" in line for line in refused) == 10
    assert sum("outcome='throttled'" in line for line in refused) == 2


# -- the one 404 -------------------------------------------------------------------------


def _near_misses(token: str) -> list[str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    changed = [
        token[:i] + next(c for c in alphabet if c != token[i]) + token[i + 1 :]
        for i in range(len(token))
    ]
    return [*changed, token[:-1], token[:20], token[:1], token + "A", token + "xyz", token.upper()]


def test_every_unusable_token_gets_the_same_404(server):
    box = mailbox(server, "gone", "docs")
    put_as_owner(server, f"{box}/docs/a.txt", b"hello")
    live = share(server, f"{box}/docs", "read")
    revoked = share(server, f"{box}/docs", "read")
    exhausted = share(server, f"{box}/docs", "read", "--max-downloads", "1")
    expires = datetime.now(UTC) + timedelta(seconds=4)
    expired = share(server, f"{box}/docs", "read", "--expires", expires.isoformat())
    if datetime.now(UTC) < expires - timedelta(seconds=0.5):
        assert propfind(expired.url()).status_code == 207
    server.cli("share", "revoke", str(revoked.id))
    assert requests.get(exhausted.url("a.txt"), timeout=10).content == b"hello"
    assert propfind(live.url()).status_code == 207
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)

    session = requests.Session()
    bodies: set[bytes] = set()
    candidates = [secrets.token_urlsafe(24) for _ in range(1000)] + _near_misses(live.token)
    for token in candidates:
        answer = session.get(f"{server.url}/s/{token}/dav/", timeout=10)
        assert answer.status_code == 404, token
        bodies.add(answer.content)
    for link in (revoked, exhausted, expired):
        for path in ("", "a.txt"):
            for method in ("GET", "PROPFIND", "PUT", "DELETE"):
                answer = session.request(method, link.url(path), timeout=10)
                assert answer.status_code == 404, (link, method)
                bodies.add(answer.content)
    assert bodies == {NOT_FOUND}
    listing = server.cli("share", "list", "--mailbox", box).stdout
    states = {line.split("\t")[0]: line.split("\t")[3] for line in listing.splitlines()}
    assert states == {
        str(live.id): "active",
        str(revoked.id): "revoked",
        str(exhausted.id): "exhausted",
        str(expired.id): "expired",
    }


# -- policies -----------------------------------------------------------------------------


def _member(server: DavboxServer, box: str) -> tuple[str, str]:
    """A member of ``box`` who logs in with the account password."""
    name = f"mem-{box}"
    server.add_user(name)
    accounts.grant(server.database(), box, name, "member")
    return name, PASSWORD


def test_policies_apply_to_link_uploads_as_to_members(server):
    box = mailbox(server, "pol")
    member = _member(server, box)
    link = share(server, box, "drop")
    cases = [
        ("big.pdf", PDF + b"0" * 1_000_000, 413, "files larger than 1 MB are not accepted in"),
        ("exe.pdf", EXE, 415, "the content of 'exe.pdf' is not a .pdf file"),
        ("tool.exe", EXE, 415, "files of type .exe are not accepted in"),
    ]
    for name, data, status, message in cases:
        as_member = requests.put(server.dav(f"{box}/{name}"), data=data, auth=member, timeout=30)
        through_link = requests.put(link.url(name), data=data, timeout=30)
        assert as_member.status_code == through_link.status_code == status, name
        assert message in through_link.text and message in as_member.text
        assert through_link.text.replace("this folder", f"mailbox '{box}'") == as_member.text
    # A chunked upload (no declared size) is stopped while it streams.
    chunked = requests.put(
        link.url("stream.pdf"), data=iter([PDF] + [b"0" * 65536] * 20), timeout=30
    )
    assert chunked.status_code == 413
    assert "files larger than 1 MB are not accepted in this folder" in chunked.text
    assert owner_view(server, box) == {}
    assert list((server.data_dir / "storage" / "tmp").iterdir()) == []
    assert requests.put(link.url("fine.pdf"), data=PDF, timeout=10).status_code == 201


def test_quota_applies_to_link_uploads(server):
    box = mailbox(server, "quota")
    link = share(server, box, "drop")
    for n in range(3):
        assert (
            requests.put(link.url(f"f{n}.bin"), data=os.urandom(300_000), timeout=30).status_code
            == 201
        )
    full = requests.put(link.url("f3.bin"), data=os.urandom(300_000), timeout=30)
    assert full.status_code == 507
    assert re.search(r"this folder is full: 900 [kK]B of 1 MB used", full.text), full.text
    assert box not in full.text
    assert sorted(owner_view(server, box)) == ["f0.bin", "f1.bin", "f2.bin"]


def test_the_twofactor_policy_does_not_block_links(server):
    box = mailbox(server, "tf")
    member = _member(server, box)
    refused = requests.put(server.dav(f"{box}/a.txt"), data=b"x", auth=member, timeout=10)
    assert refused.status_code == 403 and "needs two-factor login" in refused.text
    drop = share(server, box, "drop")
    assert requests.put(drop.url("a.txt"), data=b"through the link", timeout=10).status_code == 201
    read = share(server, box, "read")
    assert requests.get(read.url("a.txt"), timeout=10).content == b"through the link"


# -- upload windows -----------------------------------------------------------------------


def test_uploads_only_inside_the_upload_window(server):
    box = mailbox(server, "win", "in")
    link = share(server, f"{box}/in", "drop", "--upload-window", "1m")
    write = share(server, f"{box}/in", "write", "--upload-window", "1m")
    assert requests.put(link.url("early.txt"), data=b"in time", timeout=10).status_code == 201
    with server.database().session() as session:
        session.execute(
            update(ShareLink)
            .where(ShareLink.id.in_([link.id, write.id]))
            .values(upload_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    late = requests.put(link.url("late.txt"), data=b"too late", timeout=10)
    assert late.status_code == 403
    assert late.text == "403 Forbidden: this link no longer accepts uploads\n"
    assert (
        requests.request("LOCK", link.url("late.txt"), data=LOCK_BODY, timeout=10).status_code
        == 403
    )
    assert requests.delete(write.url("early.txt"), timeout=10).status_code == 403
    assert requests.request("MKCOL", write.url("new"), timeout=10).status_code == 403
    assert propfind(link.url()).status_code == 207
    assert propfind(write.url()).status_code == 207
    assert requests.get(write.url("early.txt"), timeout=10).content == b"in time"
    assert owner_view(server, f"{box}/in") == {"early.txt": b"in time"}
    log = server_log(server)
    refused = [line for line in log.splitlines() if "access-refused" in line]
    wanted = [f"actor='link-{link.id}'", "operation='put'", "status=403"]
    assert any(all(w in line for w in [*wanted, "rule='link-upload-window'"]) for line in refused)


# -- events and the log ----------------------------------------------------------------------


def test_every_link_request_is_an_event_without_secrets(server):
    box = mailbox(server, "ev", "docs")
    put_as_owner(server, f"{box}/docs/a.txt", b"event")
    link = share(server, f"{box}/docs", "read", password=LINK_PASSWORD)
    auth = ("anyone", LINK_PASSWORD)
    requests_made = [
        propfind(link.url(), auth=auth).status_code,
        requests.get(link.url("a.txt"), auth=auth, timeout=10).status_code,
        requests.head(link.url("a.txt"), auth=auth, timeout=10).status_code,
        requests.put(link.url("b.txt"), data=b"x", auth=auth, timeout=10).status_code,
        requests.delete(link.url("a.txt"), auth=auth, timeout=10).status_code,
        propfind(f"{server.url}/public.php/webdav/", auth=(link.token, LINK_PASSWORD)).status_code,
    ]
    assert requests_made == [207, 200, 200, 403, 403, 207]
    time.sleep(0.2)
    log = server_log(server).splitlines()
    used = [
        line for line in log if "link-used" in line and re.search(rf"\blink_id={link.id}\b", line)
    ]
    assert len(used) == len(requests_made)
    assert all(f"actor='link-{link.id}' actor_kind='link'" in line for line in used)
    assert [field(line, "method") for line in used] == [
        "PROPFIND",
        "GET",
        "HEAD",
        "PUT",
        "DELETE",
        "PROPFIND",
    ]
    refused = [
        line for line in log if "access-refused" in line and f"actor='link-{link.id}'" in line
    ]
    assert [field(line, "operation") for line in refused] == [
        "create",
        "delete",
    ]


def test_no_token_or_link_password_ever_reached_the_log(server):
    """Defined last, so it runs last: every token and password handed out above."""
    log = server_log(server, until="link-used")
    assert "link-used" in log
    leaked = sorted(secret for secret in SECRETS if secret in log)
    assert leaked == []
