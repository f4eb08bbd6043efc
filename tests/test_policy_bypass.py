"""Attempts to get around the policies of a real server: names, renames, LOCK, content, size, quota.

One server for the module, with a SecureTransfer-like rule set on the mailboxes
``st*`` (an allow-list of types with a content check, 1 MB per file) and a quota
on ``quota-*`` (3 MB, 5 files); ``open``, ``public-st`` and ``bob-open`` have no
rules. Every refusal is checked three ways: its status, its readable reason in
the body, and that nothing was stored (the storage tree is unchanged, no temp
is left in ``storage/tmp``). Requests go out with ``http.client`` or raw sockets, so the
path reaches the server byte for byte (``requests`` would undo ``%2E``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import itertools
import socket
import threading
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote
from xml.etree import ElementTree

import pytest

from tests.davserver import PASSWORD, DavboxServer

ALICE = "alice"  # member of every mailbox
BOB = "bob"  # member of "bob-open" only
ST = "st"
ALLOWED = "pdf, docx, txt, zip, jpg, lzma"
LIMIT = 1_000_000  # st*: max_file_size 1MB
QUOTA = 3_000_000  # quota-*: max_bytes 3MB
MAX_FILES = 5
MAILBOXES = [
    ST,
    "st-extra",
    "open",
    "public-st",
    "quota-bytes",
    "quota-files",
    "quota-lock",
    "quota-props",
]

CONFIG = f"""\
server:
  request_timeout: 10
policies:
  - name: st-types
    type: extensions
    mailboxes: ["st*"]
    allow: [{ALLOWED}]
    verify_content: true
  - name: st-size
    type: size
    mailboxes: ["st*"]
    max_file_size: 1MB
  - name: quota
    type: quota
    mailboxes: ["quota-*"]
    max_bytes: 3MB
    max_files: {MAX_FILES}
"""

# --- file contents -----------------------------------------------------------------------------

PDF = (
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(8) + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + bytes(200)
MZ = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00\xb8"
    + bytes(0x3C - 17)
    + b"\x80\x00\x00\x00"
    + bytes(0x80 - 0x40)
    + b"PE\x00\x00\x4c\x01"
    + bytes(200)
)
MACHO = b"\xcf\xfa\xed\xfe\x07\x00\x00\x01\x03\x00\x00\x00\x02\x00\x00\x00" + bytes(200)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
TEXT = b"Meeting notes\nNothing to see here.\n"


def make_zip(**members: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name.replace("__", "/"), text)
    return buffer.getvalue()


ZIP = make_zip(readme__txt="hello")
DOCX = make_zip(
    **{
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="urn:ct"/>',
        "word__document.xml": "<w:document/>",
    }
)


def pdf_of(size: int) -> bytes:
    """A file of exactly ``size`` bytes that passes the .pdf content check."""
    return (PDF + b"%" * size)[:size]


def blob(size: int, seed: str = "x") -> bytes:
    return (seed.encode() * size)[:size]


# --- the server --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    folder = tmp_path_factory.mktemp("bypass")
    config = folder / "davbox.yaml"
    config.write_text(CONFIG)
    srv = DavboxServer(folder / "data", config=config).start()
    try:
        srv.add_user(ALICE)
        srv.add_user(BOB)
        for box in MAILBOXES:
            srv.mailbox(box, **{ALICE: "member"})
        srv.mailbox("bob-open", **{BOB: "member"})
        # Mailbox folders are made on first use: make them now, before any snapshot.
        for box, user in [*((box, ALICE) for box in MAILBOXES), ("bob-open", BOB)]:
            assert call(srv, "PROPFIND", f"{box}/", headers={"Depth": "0"}, user=user).status == 207
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def srv(server: DavboxServer) -> DavboxServer:
    """The shared server, checked to hold no temp left by an earlier test."""
    assert temps(server) == []
    return server


# --- HTTP helpers ------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()


def call(
    server: DavboxServer,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    user: str = ALICE,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> Reply:
    """One request; ``path`` (below /dav/) is sent exactly as given, already percent-encoded."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        all_headers = {"Authorization": basic(user), **(headers or {})}
        if chunked:
            data = body or b""
            pieces = iter([data[i : i + 7000] for i in range(0, len(data), 7000)])
            conn.request(
                method, f"/dav/{path}", body=pieces, headers=all_headers, encode_chunked=True
            )
        else:
            # Headers first, then the body: a server that refuses an upload up front
            # answers and closes without reading it, and the answer must still be read
            # (as curl does) when sending the rest fails.
            conn.putrequest(method, f"/dav/{path}", skip_accept_encoding=True)
            for name, value in all_headers.items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            if body:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.send(body)
        response = conn.getresponse()
        return Reply(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        conn.close()


def put(server: DavboxServer, path: str, data: bytes, **kwargs: object) -> Reply:
    return call(server, "PUT", path, data, **kwargs)  # type: ignore[arg-type]


def get(server: DavboxServer, path: str, user: str = ALICE) -> bytes | None:
    """The stored content, or None for 404."""
    reply = call(server, "GET", path, user=user)
    if reply.status == 404:
        return None
    assert reply.status == 200, reply.text
    return reply.body


def destination(server: DavboxServer, path: str) -> dict[str, str]:
    return {"Destination": f"{server.url}/dav/{path}", "Overwrite": "F"}


LOCK_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    b"<D:owner>tests</D:owner></D:lockinfo>"
)


def lock(server: DavboxServer, path: str) -> Reply:
    return call(
        server,
        "LOCK",
        path,
        LOCK_BODY,
        headers={"Content-Type": "application/xml", "Timeout": "Second-60", "Depth": "0"},
    )


def propfind(
    server: DavboxServer, path: str, props: list[str], depth: str = "1"
) -> ElementTree.Element:
    inner = "".join(f"<D:{p}/>" for p in props)
    body = f'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>{inner}</D:prop></D:propfind>'
    reply = call(
        server,
        "PROPFIND",
        path,
        body.encode(),
        headers={"Depth": depth, "Content-Type": "application/xml"},
    )
    assert reply.status == 207, reply.text
    return ElementTree.fromstring(reply.body)


def listing(server: DavboxServer, folder: str) -> set[str]:
    """Names (decoded) of the members of ``folder``."""
    tree = propfind(server, folder, ["resourcetype"])
    hrefs = [unquote(h.text or "") for h in tree.iter("{DAV:}href")]
    base = f"/dav/{unquote(folder).strip('/')}/"
    return {h[len(base) :].rstrip("/") for h in hrefs if h.startswith(base) and h != base}


# --- raw sockets -------------------------------------------------------------------------------


def raw_head(server: DavboxServer, method: str, path: str, *lines: str, user: str = ALICE) -> bytes:
    lines = (f"Host: 127.0.0.1:{server.port}", f"Authorization: {basic(user)}", *lines)
    head = f"{method} /dav/{path} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines)
    return (head + "\r\n").encode("latin-1")


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError, TimeoutError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def parse_replies(data: bytes) -> list[Reply]:
    """The responses in ``data``, one after the other (each with a Content-Length)."""
    replies = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        replies.append(Reply(int(lines[0].split()[1]), headers, rest[:length]))
        data = rest[length:]
    return replies


def chunked(data: bytes, size: int = 64 * 1024) -> bytes:
    out = b"".join(
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    )
    return out + b"0\r\n\r\n"


class Sender:
    """Send bytes from a thread, so that a server that answers early cannot block the test."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.sock = sock
        self.data = data
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(self.data)

    def join(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def raw_put(server: DavboxServer, path: str, head_lines: list[str], body: bytes) -> list[Reply]:
    """Send a PUT head and ``body`` as is (framing is the caller's); all replies until close."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw_head(server, "PUT", path, *head_lines))
        sender = Sender(sock, body)
        data = read_until_closed(sock)
        sender.join()
    return parse_replies(data)


# --- what is stored ----------------------------------------------------------------------------


def temps(server: DavboxServer) -> list[str]:
    return sorted(entry.name for entry in (server.data_dir / "storage" / "tmp").iterdir())


def snapshot(server: DavboxServer) -> dict[str, str]:
    """Every file and folder of every mailbox, with a digest of each file's content."""
    root = server.data_dir / "storage" / "mailboxes"
    state = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        state[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def stored_names(server: DavboxServer) -> set[str]:
    root = server.data_dir / "storage" / "mailboxes"
    return {path.name for path in root.rglob("*")}


def assert_no_temps(server: DavboxServer, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while temps(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert temps(server) == [], "leftover temp files in storage/tmp"


@contextlib.contextmanager
def nothing_stored(server: DavboxServer) -> Iterator[None]:
    """The block changes no file or folder of any mailbox and leaves no temp."""
    before = snapshot(server)
    yield
    assert_no_temps(server)
    after = snapshot(server)
    assert after == before, {
        "added or changed": sorted(k for k in after if after.get(k) != before.get(k)),
        "removed": sorted(k for k in before if k not in after),
    }


SABRE = "{http://sabredav.org/ns}"


def reason_of(reply: Reply) -> str:
    """The readable reason of a refusal.

    WebDAV refusals carry it in a DAV error document as SabreDAV's ``<s:message>``
    (what ownCloud/Nextcloud clients show), next to ``<s:exception>`` naming the
    status; refusals before WebDAV (the dispatcher's) are one line of text,
    ``"<code> <phrase>: <reason>"``.
    """
    phrase = f"{reply.status} {http.client.responses[reply.status]}"
    if reply.headers.get("content-type", "").startswith("application/xml"):
        root = ElementTree.fromstring(reply.body)
        assert root.tag == "{DAV:}error", reply.text
        assert root.findtext(f"{SABRE}exception") == phrase, reply.text
        return root.findtext(f"{SABRE}message") or ""
    assert reply.text.startswith(f"{phrase}: "), reply.text
    return reply.text.removeprefix(f"{phrase}: ").strip()


def assert_refused(reply: Reply, status: int, reason: str) -> None:
    """``status`` with a readable reason that contains ``reason``."""
    assert reply.status == status, (reply.status, reply.text)
    assert reason in reason_of(reply), reply.text


def type_reason(ext: str, box: str = ST) -> str:
    return f"files of type .{ext} are not accepted in mailbox '{box}'; allowed: {ALLOWED}"


def content_reason(name: str, ext: str, box: str = ST) -> str:
    return (
        f"the content of '{name}' is not a .{ext} file;"
        f" files must have the extension of their type in mailbox '{box}'"
    )


def size_reason(box: str = ST) -> str:
    return f"files larger than 1 MB are not accepted in mailbox '{box}'"


NO_EXTENSION = f"files without an extension are not accepted in mailbox '{ST}'; allowed: {ALLOWED}"
TRAILING = "file names may not end with a dot or a space"
CONTROL = "the request path contains control characters"
NFD = unicodedata.normalize("NFD", "résumé")
SERIAL = itertools.count(1)  # unique names for tests that create their own files


# --- 1. names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        pytest.param("a.exe", 415, type_reason("exe"), id="exe"),
        pytest.param("a.EXE", 415, type_reason("exe"), id="upper-case"),
        pytest.param("a.Exe", 415, type_reason("exe"), id="mixed-case"),
        pytest.param("report.pdf.exe", 415, type_reason("exe"), id="double-extension"),
        pytest.param("a%2Eexe", 415, type_reason("exe"), id="encoded-dot"),
        pytest.param("a%2eEXE", 415, type_reason("exe"), id="encoded-dot-lower-hex"),
        pytest.param("a.ex%65", 415, type_reason("exe"), id="encoded-letter"),
        pytest.param("a.exe::$DATA", 415, type_reason("exe::$data"), id="ntfs-stream"),
        pytest.param(quote("x\u202efdp.exe"), 415, type_reason("exe"), id="right-to-left-override"),
        pytest.param(quote("a.pdf\u200b"), 415, type_reason("pdf\u200b"), id="zero-width-space"),
        pytest.param(
            quote("a.ex" + "e\u0301"), 415, type_reason("ex\u00e9"), id="combining-accent"
        ),
        pytest.param(quote("a\uff0eexe"), 415, NO_EXTENSION, id="fullwidth-dot"),
        pytest.param("noext", 415, NO_EXTENSION, id="no-extension"),
        pytest.param(".pdf", 415, NO_EXTENSION, id="dotfile"),
        pytest.param("a.pdf.", 400, TRAILING, id="trailing-dot"),
        pytest.param("a.exe.", 400, TRAILING, id="exe-trailing-dot"),
        pytest.param("a.pdf%20", 400, TRAILING, id="trailing-space"),
        pytest.param("a.exe%20", 400, TRAILING, id="exe-trailing-space"),
        pytest.param("a.pdf%00.exe", 400, CONTROL, id="nul"),
        pytest.param("a%01.pdf", 400, CONTROL, id="control-char"),
        pytest.param("a.pdf%0A", 400, CONTROL, id="newline"),
        pytest.param("a%1B.pdf", 400, CONTROL, id="escape"),
        pytest.param("a%7F.pdf", 400, CONTROL, id="delete-char"),
        pytest.param("a%FF.pdf", 400, "the request path is not valid UTF-8", id="bad-utf8"),
    ],
)
def test_put_with_a_refused_name_stores_nothing(srv, name, status, reason):
    with nothing_stored(srv):
        reply = put(srv, f"{ST}/{name}", PDF)
    assert_refused(reply, status, reason)


@pytest.mark.parametrize(
    ("name", "stored_as"),
    [
        pytest.param("report.exe.pdf", "report.exe.pdf", id="exe-then-pdf"),
        pytest.param("upper.PDF", "upper.PDF", id="upper-case-allowed"),
        pytest.param("enc%2Epdf", "enc.pdf", id="encoded-dot-allowed"),
        pytest.param(quote(f"{NFD}.pdf"), "résumé.pdf", id="nfd-stored-as-nfc"),
    ],
)
def test_put_with_an_allowed_name_is_stored(srv, name, stored_as):
    reply = put(srv, f"{ST}/{name}", PDF)
    assert reply.status == 201, reply.text
    assert stored_as in listing(srv, ST)
    assert stored_as in stored_names(srv)
    assert get(srv, f"{ST}/{quote(stored_as)}") == PDF
    if stored_as == "résumé.pdf":
        assert unicodedata.normalize("NFD", stored_as) not in listing(srv, ST)
        assert unicodedata.normalize("NFD", stored_as) not in stored_names(srv)
        assert get(srv, f"{ST}/{name}") == PDF  # the NFD URL reaches the same file


# --- 2. MOVE and COPY --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
@pytest.mark.parametrize(
    ("target", "status", "reason"),
    [
        pytest.param("{stem}.exe", 415, type_reason("exe"), id="exe"),
        pytest.param("{stem}.EXE", 415, type_reason("exe"), id="upper-case"),
        pytest.param("{stem}%2Eexe", 415, type_reason("exe"), id="encoded-dot"),
        pytest.param("{stem}.pdf.exe", 415, type_reason("exe"), id="double-extension"),
        pytest.param("{stem}", 415, NO_EXTENSION, id="no-extension"),
        pytest.param("{stem}.pdf.", 400, TRAILING, id="trailing-dot"),
        pytest.param("{stem}.pdf%20", 400, TRAILING, id="trailing-space"),
        pytest.param(
            "{stem}.pdf%00.exe",
            400,
            "control characters",
            id="nul",
        ),
    ],
)
def test_rename_to_a_refused_name_keeps_the_source(srv, method, target, status, reason):
    stem = f"ren-{next(SERIAL)}"
    assert put(srv, f"{ST}/{stem}.pdf", PDF).status == 201
    with nothing_stored(srv):
        reply = call(
            srv,
            method,
            f"{ST}/{stem}.pdf",
            headers=destination(srv, f"{ST}/{target.format(stem=stem)}"),
        )
    assert_refused(reply, status, reason)
    assert get(srv, f"{ST}/{stem}.pdf") == PDF


def test_rename_to_an_nfd_name_is_stored_as_nfc(srv):
    assert put(srv, f"{ST}/nfd-source.pdf", PDF).status == 201
    reply = call(
        srv,
        "MOVE",
        f"{ST}/nfd-source.pdf",
        headers=destination(srv, f"{ST}/{quote(NFD)}-moved.pdf"),
    )
    assert reply.status == 201, reply.text
    assert "résumé-moved.pdf" in listing(srv, ST)


def make_tree(server: DavboxServer, folder: str, files: dict[str, bytes]) -> None:
    """Create ``folder`` (in an unrestricted mailbox) with ``files`` ("sub/name": content)."""
    assert call(server, "MKCOL", folder).status == 201
    for sub in sorted({name.rpartition("/")[0] for name in files if "/" in name}):
        assert call(server, "MKCOL", f"{folder}/{sub}").status == 201
    for name, content in files.items():
        assert put(server, f"{folder}/{name}", content).status == 201


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
@pytest.mark.parametrize(
    ("bad_name", "bad_content", "status", "reason"),
    [
        pytest.param("sub/x.exe", MZ, 415, type_reason("exe"), id="exe-in-subfolder"),
        pytest.param("x.EXE", PDF, 415, type_reason("exe"), id="upper-case-exe"),
        pytest.param("sub/fake.pdf", ELF, 415, content_reason("fake.pdf", "pdf"), id="elf-as-pdf"),
        pytest.param("sub/big.pdf", pdf_of(LIMIT + 1), 413, size_reason(), id="too-large"),
    ],
)
def test_folder_with_a_refused_file_does_not_arrive(
    srv, method, bad_name, bad_content, status, reason
):
    folder = f"pkg-{next(SERIAL)}"
    files = {"ok.pdf": PDF, "sub/ok.txt": TEXT, bad_name: bad_content}
    make_tree(srv, f"open/{folder}", files)
    with nothing_stored(srv):
        reply = call(srv, method, f"open/{folder}", headers=destination(srv, f"{ST}/{folder}"))
    assert_refused(reply, status, reason)
    assert get(srv, f"{ST}/{folder}/ok.pdf") is None
    for name, content in files.items():
        assert get(srv, f"open/{folder}/{name}") == content


@pytest.mark.parametrize("method", ["MOVE", "COPY"])
def test_folder_of_allowed_files_arrives(srv, method):
    folder = f"clean-{method.lower()}"
    files = {"ok.pdf": PDF, "sub/ok.txt": TEXT, "sub/doc.docx": DOCX}
    make_tree(srv, f"open/{folder}", files)
    reply = call(srv, method, f"open/{folder}", headers=destination(srv, f"{ST}/{folder}"))
    assert reply.status == 201, reply.text
    for name, content in files.items():
        assert get(srv, f"{ST}/{folder}/{name}") == content


# --- 3. LOCK -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        pytest.param("locked.exe", 415, type_reason("exe"), id="exe"),
        pytest.param("locked%2EEXE", 415, type_reason("exe"), id="encoded-upper-exe"),
        pytest.param("locked", 415, NO_EXTENSION, id="no-extension"),
        pytest.param("locked.pdf.", 400, TRAILING, id="trailing-dot"),
    ],
)
def test_lock_of_an_unmapped_refused_name_creates_nothing(srv, name, status, reason):
    with nothing_stored(srv):
        reply = lock(srv, f"{ST}/{name}")
    assert_refused(reply, status, reason)


def lock_token(reply: Reply) -> str:
    assert reply.status == 201, reply.text
    return reply.headers["lock-token"].strip("<>")


def test_lock_then_put_of_an_allowed_name_stores_the_file(srv):
    token = lock_token(lock(srv, f"{ST}/locked.pdf"))
    reply = put(srv, f"{ST}/locked.pdf", PDF, headers={"If": f"(<{token}>)"})
    assert reply.status in (201, 204), reply.text
    assert get(srv, f"{ST}/locked.pdf") == PDF
    unlock = call(srv, "UNLOCK", f"{ST}/locked.pdf", headers={"Lock-Token": f"<{token}>"})
    assert unlock.status == 204, unlock.text


def test_lock_then_put_of_an_executable_keeps_only_the_empty_placeholder(srv):
    token = lock_token(lock(srv, f"{ST}/placeholder.pdf"))
    with nothing_stored(srv):
        reply = put(srv, f"{ST}/placeholder.pdf", MZ, headers={"If": f"(<{token}>)"})
    assert_refused(reply, 415, content_reason("placeholder.pdf", "pdf"))
    assert get(srv, f"{ST}/placeholder.pdf") == b""
    call(srv, "UNLOCK", f"{ST}/placeholder.pdf", headers={"Lock-Token": f"<{token}>"})


# --- 4. content --------------------------------------------------------------------------------

CONTENT_CASES = [
    pytest.param("elf.pdf", ELF, 415, id="elf-as-pdf"),
    pytest.param("mz.pdf", MZ, 415, id="windows-exe-as-pdf"),
    pytest.param("mz.zip", MZ, 415, id="windows-exe-as-zip"),
    pytest.param("mz.docx", MZ, 415, id="windows-exe-as-docx"),
    pytest.param("mz.txt", MZ, 415, id="windows-exe-as-txt"),
    pytest.param("elf.lzma", ELF, 415, id="elf-as-lzma"),
    pytest.param("macho.lzma", MACHO, 415, id="mach-o-as-lzma"),
    pytest.param("macho.jpg", MACHO, 415, id="mach-o-as-jpg"),
    pytest.param("nul.txt", b"notes\x00\x00\x01binary", 415, id="nul-bytes-as-txt"),
    pytest.param("pdf.txt", PDF, 415, id="pdf-as-txt"),
    pytest.param("zip.pdf", ZIP, 415, id="zip-as-pdf"),
    pytest.param("png.jpg", PNG, 415, id="png-as-jpg"),
    pytest.param("real.pdf", PDF, 201, id="pdf"),
    pytest.param("real.zip", ZIP, 201, id="zip"),
    pytest.param("zip.docx", ZIP, 201, id="zip-as-docx"),
    pytest.param("real.docx", DOCX, 201, id="docx"),
    pytest.param("real.jpg", JPEG, 201, id="jpeg"),
    pytest.param("plain.txt", TEXT, 201, id="text"),
    pytest.param("bmi.txt", b"BMI results 2024: 22.5\n", 201, id="text-starting-like-a-bitmap"),
    pytest.param("data.txt", b'{"report": 1}\n', 201, id="json-text"),
    pytest.param("empty.pdf", b"", 201, id="empty"),
]


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(("name", "body", "status"), CONTENT_CASES)
def test_content_must_match_the_extension(srv, framing, name, body, status):
    path = f"{ST}/{framing}-{name}"
    if status != 201:
        with nothing_stored(srv):
            reply = put(srv, path, body, chunked=framing == "chunked")
        ext = name.rpartition(".")[2]
        assert_refused(reply, status, content_reason(f"{framing}-{name}", ext))
        assert get(srv, path) is None
    else:
        reply = put(srv, path, body, chunked=framing == "chunked")
        assert reply.status == 201, reply.text
        assert get(srv, path) == body


def test_overwrite_with_an_executable_keeps_the_old_version(srv):
    assert put(srv, f"{ST}/keep.pdf", PDF).status == 201
    with nothing_stored(srv):
        reply = put(srv, f"{ST}/keep.pdf", ELF)
    assert_refused(reply, 415, content_reason("keep.pdf", "pdf"))
    assert get(srv, f"{ST}/keep.pdf") == PDF


# --- 5. size -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "body", "detail"),
    [
        pytest.param(
            [f"Content-Length: {LIMIT + 1}"],
            b"",
            f"(this file has {LIMIT + 1} bytes, the limit is {LIMIT})",
            id="content-length",
        ),
        pytest.param(
            ["Content-Length: 9999999999"], b"", "(this file has 10 GB)", id="content-length-huge"
        ),
        pytest.param(
            ["Transfer-Encoding: chunked", "X-Expected-Entity-Length: 2000000"],
            chunked(PDF),
            "(this file has 2 MB)",
            id="finder-x-expected-entity-length",
        ),
        pytest.param(
            ["Transfer-Encoding: chunked", "OC-Total-Length: 2000000"],
            chunked(PDF),
            "(this file has 2 MB)",
            id="nextcloud-oc-total-length",
        ),
        pytest.param(
            [f"Content-Length: {len(PDF)}", "OC-Total-Length: 2000000"],
            PDF,
            "(this file has 2 MB)",
            id="small-length-large-oc-total-length",
        ),
    ],
)
def test_declared_size_over_the_limit_is_refused_before_the_body(srv, lines, body, detail):
    """Only the head (and at most a small body) is sent: the 413 must come at once, and close."""
    with nothing_stored(srv), socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(raw_head(srv, "PUT", f"{ST}/declared.pdf", *lines) + body)
        data = read_until_closed(sock, timeout=5)
        elapsed = time.monotonic() - started
    assert elapsed < 2, f"the refusal took {elapsed:.1f}s (did the server wait for the body?)"
    [reply] = parse_replies(data)
    assert_refused(reply, 413, f"{size_reason()} {detail}")
    assert reply.headers.get("connection", "").lower() == "close"


@pytest.mark.parametrize(
    ("size", "status"),
    [
        pytest.param(LIMIT + 1, 413, id="limit-plus-one"),
        pytest.param(LIMIT, 201, id="exactly-the-limit"),
    ],
)
def test_chunked_body_is_held_to_the_limit(srv, size, status):
    path = f"{ST}/chunked-{size}.pdf"
    data = pdf_of(size)
    if status == 413:
        with nothing_stored(srv):
            [reply] = raw_put(srv, path, ["Transfer-Encoding: chunked"], chunked(data))
        assert_refused(reply, 413, f"{size_reason()}; nothing was stored")
        assert get(srv, path) is None
    else:
        reply = put(srv, path, data, chunked=True)
        assert reply.status == 201, reply.text
        assert get(srv, path) == data


def test_content_length_of_exactly_the_limit_is_stored(srv):
    data = pdf_of(LIMIT)
    assert put(srv, f"{ST}/exact.pdf", data).status == 201
    assert get(srv, f"{ST}/exact.pdf") == data


def test_copy_of_a_large_file_into_the_restricted_mailbox_is_refused(srv):
    assert put(srv, "open/large.pdf", pdf_of(LIMIT + 1)).status == 201
    with nothing_stored(srv):
        reply = call(srv, "COPY", "open/large.pdf", headers=destination(srv, f"{ST}/large.pdf"))
    assert_refused(reply, 413, size_reason())


@pytest.mark.parametrize(
    ("header", "value"),
    [
        pytest.param("X-Expected-Entity-Length", "abc", id="finder-letters"),
        pytest.param("X-Expected-Entity-Length", "-1", id="finder-negative"),
        pytest.param("X-Expected-Entity-Length", "\u00b2", id="finder-superscript-two"),
        pytest.param("OC-Total-Length", "1e9", id="nextcloud-exponent"),
        pytest.param("OC-Total-Length", "\u00b9\u00b2", id="nextcloud-superscripts"),
    ],
)
def test_malformed_declared_size_is_a_clean_400(srv, header, value):
    with nothing_stored(srv):
        replies = raw_put(
            srv,
            f"{ST}/malformed.pdf",
            ["Transfer-Encoding: chunked", f"{header}: {value}"],
            chunked(PDF),
        )
    assert_refused(replies[0], 400, f"invalid {header} header")


@pytest.mark.parametrize(
    "rest",
    [
        pytest.param(b"X" * 2000 + b"\r\n\r\n", id="garbage"),
        pytest.param(
            b"PUT /dav/st/smuggled.exe HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + basic(ALICE).encode()
            + f"\r\nContent-Length: {len(MZ)}\r\n\r\n".encode()
            + MZ,
            id="pipelined-exe",
        ),
    ],
)
def test_body_longer_than_its_content_length_stores_only_the_declared_bytes(srv, rest):
    """The server reads exactly Content-Length bytes; what follows is the next request."""
    declared = pdf_of(500)
    path = f"{ST}/short-{len(rest)}.pdf"
    replies = raw_put(srv, path, [f"Content-Length: {len(declared)}"], declared + rest)
    assert replies, "no answer"
    assert all(r.status < 500 for r in replies), [(r.status, r.text) for r in replies]
    assert replies[0].status == 201, replies[0].text
    assert get(srv, path) == declared
    if b"smuggled" in rest:
        assert len(replies) == 2
        assert_refused(replies[1], 415, type_reason("exe"))
        assert get(srv, f"{ST}/smuggled.exe") is None
    else:
        assert replies[-1].status == 400
    assert_no_temps(srv)


# --- 6. quota ----------------------------------------------------------------------------------


def full_reason(box: str, used: str) -> str:
    return f"mailbox '{box}' is full: {used} of 3 MB used"


def test_quota_bytes(srv):
    box = "quota-bytes"
    a, b = blob(LIMIT, "a"), blob(LIMIT, "b")
    assert put(srv, f"{box}/a.bin", a).status == 201
    assert put(srv, f"{box}/b.bin", b).status == 201
    # 2 MB used: 1.5 MB does not fit, whether announced or streamed.
    with nothing_stored(srv):
        [reply] = raw_put(srv, f"{box}/c.bin", ["Content-Length: 1500000"], b"")
    assert_refused(reply, 507, full_reason(box, "2 MB"))
    assert reply.headers.get("connection", "").lower() == "close"
    with nothing_stored(srv):
        [reply] = raw_put(
            srv, f"{box}/c.bin", ["Transfer-Encoding: chunked"], chunked(blob(1_500_000))
        )
    assert_refused(reply, 507, f"{full_reason(box, '2 MB')}; nothing was stored")
    # Exactly full is allowed; one byte more is not.
    c = blob(LIMIT, "c")
    assert put(srv, f"{box}/c.bin", c).status == 201
    for framing in ("length", "chunked"):
        with nothing_stored(srv):
            reply = put(srv, f"{box}/d.bin", b"d", chunked=framing == "chunked")
        assert_refused(reply, 507, full_reason(box, "3 MB"))
    # Replacing a file by one of the same size frees what it takes: allowed when full.
    a2 = blob(LIMIT, "A")
    assert put(srv, f"{box}/a.bin", a2).status == 204
    assert get(srv, f"{box}/a.bin") == a2
    # A larger replacement is not, and the old version stays.
    with nothing_stored(srv):
        reply = put(srv, f"{box}/a.bin", blob(LIMIT + 1))
    assert_refused(reply, 507, full_reason(box, "3 MB"))
    assert get(srv, f"{box}/a.bin") == a2
    # Nothing comes in by MOVE or COPY either; renaming inside the full mailbox is fine.
    assert put(srv, "open/tiny.bin", b"tiny").status == 201
    for method in ("MOVE", "COPY"):
        with nothing_stored(srv):
            reply = call(srv, method, "open/tiny.bin", headers=destination(srv, f"{box}/tiny.bin"))
        assert_refused(reply, 507, full_reason(box, "3 MB"))
        assert get(srv, "open/tiny.bin") == b"tiny"
    reply = call(srv, "MOVE", f"{box}/b.bin", headers=destination(srv, f"{box}/b-renamed.bin"))
    assert reply.status == 201, reply.text
    assert get(srv, f"{box}/b-renamed.bin") == b


def test_quota_max_files(srv):
    box = "quota-files"
    for i in range(MAX_FILES):
        assert put(srv, f"{box}/f{i}.txt", TEXT).status == 201
    reason = f"mailbox '{box}' is full: it may hold at most {MAX_FILES} files"
    with nothing_stored(srv):
        reply = put(srv, f"{box}/extra.txt", TEXT)
    assert_refused(reply, 507, reason)
    with nothing_stored(srv):
        reply = lock(srv, f"{box}/extra.txt")
    assert_refused(reply, 507, reason)
    with nothing_stored(srv):
        reply = call(srv, "COPY", f"{box}/f0.txt", headers=destination(srv, f"{box}/copy.txt"))
    assert_refused(reply, 507, reason)
    # Replacing one of the files adds none.
    assert put(srv, f"{box}/f0.txt", b"replaced\n").status == 204
    assert get(srv, f"{box}/f0.txt") == b"replaced\n"


def test_quota_lock_then_put_of_the_last_allowed_file(srv):
    """Explorer and Finder create a file with LOCK (an empty placeholder), then PUT, then UNLOCK.

    The placeholder already counts as one of the mailbox's files: completing it must not
    count it a second time.
    """
    box = "quota-lock"
    for i in range(MAX_FILES - 1):
        assert put(srv, f"{box}/f{i}.txt", TEXT).status == 201
    token = lock_token(lock(srv, f"{box}/last.txt"))
    reply = put(srv, f"{box}/last.txt", TEXT, headers={"If": f"(<{token}>)"})
    assert reply.status in (201, 204), reply.text
    assert get(srv, f"{box}/last.txt") == TEXT
    assert (
        call(srv, "UNLOCK", f"{box}/last.txt", headers={"Lock-Token": f"<{token}>"}).status == 204
    )
    with nothing_stored(srv):
        reply = lock(srv, f"{box}/one-too-many.txt")
    assert_refused(reply, 507, f"mailbox '{box}' is full: it may hold at most {MAX_FILES} files")


def quota_props(server: DavboxServer, path: str) -> tuple[int, int]:
    tree = propfind(server, path, ["quota-used-bytes", "quota-available-bytes"], depth="0")
    used = tree.find(".//{DAV:}quota-used-bytes")
    available = tree.find(".//{DAV:}quota-available-bytes")
    assert used is not None and available is not None
    return int(used.text or ""), int(available.text or "")


def test_quota_properties_report_the_mailbox_not_the_disk(srv):
    box = "quota-props"
    sizes = {"a.bin": 1234, "b.bin": 56789, "sub/c.bin": 1000, "empty.bin": 0}
    assert call(srv, "MKCOL", f"{box}/sub").status == 201
    for name, size in sizes.items():
        assert put(srv, f"{box}/{name}", blob(size)).status == 201
    total = sum(sizes.values())
    assert quota_props(srv, f"{box}/") == (total, QUOTA - total)
    assert quota_props(srv, f"{box}/sub/") == (total, QUOTA - total)  # the mailbox's figures
    assert call(srv, "DELETE", f"{box}/b.bin").status == 204
    total -= sizes["b.bin"]
    assert quota_props(srv, f"{box}/") == (total, QUOTA - total)


# --- 7. mailboxes the rules do not match ------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "box"),
    [
        pytest.param(BOB, "bob-open", id="member-of-an-unrestricted-mailbox-only"),
        pytest.param(ALICE, "open", id="member-of-both"),
        pytest.param(ALICE, "public-st", id="name-contains-st-but-glob-is-st*"),
    ],
)
def test_unrestricted_mailbox_is_not_affected(srv, user, box):
    files = {
        "tool.exe": MZ,
        "elf.pdf": ELF,
        "noext": TEXT,
        "big.bin": blob(LIMIT * 3 // 2),
        "many-0.bin": b"0",
        "many-1.bin": b"1",
        "many-2.bin": b"2",
        "many-3.bin": b"3",
        "many-4.bin": b"4",
        "many-5.bin": b"5",
    }
    for name, content in files.items():
        reply = put(srv, f"{box}/{name}", content, user=user)
        assert reply.status == 201, (name, reply.text)
        assert get(srv, f"{box}/{name}", user=user) == content
    reply = call(
        srv, "MOVE", f"{box}/tool.exe", user=user, headers=destination(srv, f"{box}/tool.EXE")
    )
    assert reply.status == 201, reply.text


def test_glob_matched_mailbox_is_restricted(srv):
    with nothing_stored(srv):
        reply = put(srv, "st-extra/tool.exe", MZ)
    assert_refused(reply, 415, type_reason("exe", "st-extra"))


def test_restricted_mailbox_does_not_exist_for_a_non_member(srv):
    with nothing_stored(srv):
        reply = put(srv, f"{ST}/hello.pdf", PDF, user=BOB)
    assert reply.status == 404, reply.text
