"""Uploads are all-or-nothing, proven against a real server over real sockets.

Every test first stores a version v1, then makes an upload of v2 fail in one
way (connection reset, half-close, stall, crash of the server, full disk,
truncated chunked body) or races several uploads, and then checks that:

- GET returns v1 (or exactly one complete new version) byte for byte;
- ``<data-dir>/storage/tmp/`` holds no leftover temp file.

The byte-level cases use plain sockets so the test controls exactly which
bytes reach the server and how the connection ends. Before breaking an
upload, the tests wait until its temp file holds part of v2 on disk: that
proves the server was in the middle of writing, so a passing test is not
just an upload that never started.
"""

from __future__ import annotations

import base64
import contextlib
import random
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.davserver import PASSWORD, DavboxServer

MiB = 1024 * 1024
USER = "alice"
BOX = "box"
REQUEST_TIMEOUT = 2  # server.request_timeout for every server here (seconds)
# RLIMIT_FSIZE for the disk-full tests: not a multiple of the 1 MiB transfer block, as a real
# disk fills up at any byte, so that one write is cut short before the next one fails.
FSIZE_LIMIT = 4 * MiB + 512 * 1024
AUTH = (USER, PASSWORD)


# --- helpers ---------------------------------------------------------------------------------


def body(seed: object, size: int) -> bytes:
    """Distinct, reproducible content: a label followed by random bytes."""
    label = f"{seed}:{size}\n".encode()
    return label + random.Random(str(seed)).randbytes(size - len(label))


def prepare(server: DavboxServer) -> DavboxServer:
    server.add_user(USER)
    server.mailbox(BOX, **{USER: "member"})
    return server


def write_config(folder: Path) -> Path:
    config = folder / "davbox.yaml"
    config.write_text(f"server:\n  request_timeout: {REQUEST_TIMEOUT}\n")
    return config


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    """One server for the tests that neither kill it nor limit it (each uses its own files)."""
    folder = tmp_path_factory.mktemp("atomicity")
    server = DavboxServer(folder / "data", config=write_config(folder)).start()
    try:
        yield prepare(server)
    finally:
        server.stop()


@pytest.fixture
def clean(shared: DavboxServer) -> DavboxServer:
    """The shared server, checked to hold no temp left by an earlier test."""
    assert temps(shared) == []
    return shared


@pytest.fixture
def start(make_server: Callable[..., DavboxServer], tmp_path: Path):
    """Start a server of the test's own with user ``alice`` and mailbox ``box``."""

    def factory(**kwargs: object) -> DavboxServer:
        return prepare(make_server(config=write_config(tmp_path), **kwargs))

    return factory


def url(server: DavboxServer, name: str) -> str:
    return server.dav(f"{BOX}/{name}")


def put(server: DavboxServer, name: str, data: bytes) -> int:
    with requests.put(url(server, name), data=data, auth=AUTH, timeout=60) as response:
        return response.status_code


def get(server: DavboxServer, name: str) -> bytes | None:
    """The stored content, or None for 404."""
    with requests.get(url(server, name), auth=AUTH, timeout=60) as response:
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.content


def assert_content(server: DavboxServer, name: str, expected: bytes | None) -> None:
    """Byte-identical (compared without dumping megabytes into the failure message)."""
    actual = get(server, name)
    if expected is None:
        assert actual is None, f"{name} exists ({len(actual or b'')} bytes) but must not"
        return
    assert actual is not None, f"{name} is gone"
    assert len(actual) == len(expected) and actual == expected, (
        f"{name}: got {len(actual)} bytes starting {actual[:40]!r},"
        f" expected {len(expected)} bytes starting {expected[:40]!r}"
    )


def temp_dir(server: DavboxServer) -> Path:
    return server.data_dir / "storage" / "tmp"


def temps(server: DavboxServer) -> list[str]:
    return sorted(entry.name for entry in temp_dir(server).iterdir())


def wait_for_temp(server: DavboxServer, min_size: int, timeout: float = 10) -> Path:
    """The upload's temp file, once it holds at least ``min_size`` bytes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in temp_dir(server).iterdir():
            try:
                if entry.name.endswith(".part") and entry.stat().st_size >= min_size:
                    return entry
            except FileNotFoundError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"no temp file with {min_size} bytes appeared; tmp/ has {temps(server)}")


def assert_no_temps(server: DavboxServer, timeout: float = 5) -> None:
    """tmp/ is empty, allowing the server thread ``timeout`` seconds to notice the failure."""
    deadline = time.monotonic() + timeout
    while temps(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert temps(server) == [], "leftover temp files"


def open_put(server: DavboxServer, name: str, *, length: int | None) -> socket.socket:
    """Send the header block of a PUT: Content-Length ``length``, or chunked when None."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    head = (
        f"PUT /dav/{BOX}/{name} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Basic {token}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"{framing}\r\n"
        "\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_response(sock: socket.socket) -> tuple[int | None, bytes]:
    """(status, body) of the response on ``sock``; (None, b"") if the server sent nothing."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            received = sock.recv(65536)
            if not received:
                break
            data += received
    except ConnectionResetError:
        pass
    if not data:
        return None, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
    try:
        while len(rest) < length:
            received = sock.recv(65536)
            if not received:
                break
            rest += received
    except ConnectionResetError:
        pass
    return status, rest


class ChunkedSender:
    """Send ``data`` as 256 KiB chunks, then the last chunk, from a thread.

    The server may answer and close before it has read everything; errors that
    then hit the sender are kept in ``errors`` instead of raised, so the test
    can read the answer meanwhile.
    """

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.sock = sock
        self.data = data
        self.errors: list[OSError] = []
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        try:
            for offset in range(0, len(self.data), 256 * 1024):
                self.sock.sendall(chunk(self.data[offset : offset + 256 * 1024]))
            self.sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        """Unblock the sender (if the server stopped reading) and wait for it."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


# --- 1-3: the client goes away, half-closes or stalls ----------------------------------------

V1 = body("v1", 64 * 1024)
V2 = body("v2", 4 * MiB)
SENT = 3 * MiB // 2  # part of V2 sent before the upload is broken off


def start_v2_upload(server: DavboxServer, name: str) -> socket.socket:
    """PUT v2 with its full Content-Length, send only SENT bytes, wait until they are on disk."""
    sock = open_put(server, name, length=len(V2))
    sock.sendall(V2[:SENT])
    wait_for_temp(server, MiB)
    return sock


def test_reset_connection_mid_put_keeps_old_version(clean):
    server = clean
    assert put(server, "reset.bin", V1) == 201

    sock = start_v2_upload(server, "reset.bin")
    # While v2 is arriving, readers still get v1.
    assert_content(server, "reset.bin", V1)
    reset(sock)

    assert_no_temps(server)
    assert_content(server, "reset.bin", V1)


def test_half_closed_put_is_refused_and_keeps_old_version(clean):
    server = clean
    assert put(server, "half.bin", V1) == 201

    with start_v2_upload(server, "half.bin") as sock:
        sock.shutdown(socket.SHUT_WR)
        status, text = read_response(sock)
    assert status == 400, (status, text)
    assert b"nothing was stored" in text

    assert_no_temps(server)
    assert_content(server, "half.bin", V1)

    # The same for a file that did not exist: it is not created.
    with start_v2_upload(server, "half-new.bin") as sock:
        sock.shutdown(socket.SHUT_WR)
        status, text = read_response(sock)
    assert status == 400, (status, text)
    assert_no_temps(server)
    assert_content(server, "half-new.bin", None)


@pytest.mark.slow
def test_stalled_put_times_out_and_keeps_old_version(clean):
    server = clean
    assert put(server, "stall.bin", V1) == 201

    with start_v2_upload(server, "stall.bin") as sock:
        stalled = time.monotonic()
        # The client sends nothing more; the server gives up after request_timeout.
        assert_no_temps(server, timeout=REQUEST_TIMEOUT + 8)
        waited = time.monotonic() - stalled
        sock.settimeout(REQUEST_TIMEOUT + 8)
        status, text = read_response(sock)
    assert waited >= REQUEST_TIMEOUT - 0.5, f"upload abandoned after {waited:.1f}s, not by timeout"
    assert status is None or 400 <= status < 500, (status, text)
    assert_content(server, "stall.bin", V1)


# --- 4: the server is killed -----------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_put_then_restart_keeps_whole_version(start):
    server = start()
    assert put(server, "doc.bin", V1) == 201

    with start_v2_upload(server, "doc.bin"):
        server.kill()
    assert temps(server), "the crash should have left the unfinished upload behind"

    server.start()
    assert temps(server) == [], "temps of the killed server were not swept at start"
    assert_content(server, "doc.bin", V1)

    # A PUT that was answered survives a crash right after it.
    assert put(server, "doc.bin", V2) == 204
    server.kill()
    server.start()
    assert_content(server, "doc.bin", V2)
    assert temps(server) == []


# --- 5: the disk is full ---------------------------------------------------------------------


def limit_file_size() -> None:
    """In the server process: no file may grow beyond FSIZE_LIMIT (writes fail with EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    """A server whose files cannot grow beyond FSIZE_LIMIT: a disk that is full at 4.5 MiB."""
    folder = tmp_path_factory.mktemp("limited")
    server = DavboxServer(
        folder / "data", config=write_config(folder), preexec_fn=limit_file_size
    ).start()
    try:
        prepare(server)
        # The database must stay well below the limit, or the server itself would fail.
        assert (server.data_dir / "davbox.db").stat().st_size < FSIZE_LIMIT // 4
        assert temps(server) == []
        yield server
    finally:
        server.stop()


BIG = body("big", 16 * MiB)
FITS = body("fits", 3 * MiB)
NOTE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-davbox-test">'
    "<D:set><D:prop><Z:note>{}</Z:note></D:prop></D:set></D:propertyupdate>"
)


def assert_database_writable(server: DavboxServer, name: str) -> None:
    """A dead property is stored in (and read back from) SQLite under the file-size limit."""
    note = f"written under the limit to {name}"
    with requests.request(
        "PROPPATCH", url(server, name), data=NOTE.format(note), auth=AUTH, timeout=30
    ) as response:
        assert response.status_code == 207, response.text
        assert "200 OK" in response.text, response.text
    with requests.request(
        "PROPFIND", url(server, name), headers={"Depth": "0"}, auth=AUTH, timeout=30
    ) as response:
        assert response.status_code == 207, response.text
        assert note in response.text


@pytest.mark.slow
def test_disk_full_put_answers_507_and_keeps_old_version(limited):
    server = limited
    assert put(server, "full.bin", V1) == 201
    # Uploads below the limit work: it is the size that gets the big one refused.
    assert put(server, "fits.bin", FITS) == 201
    assert_content(server, "fits.bin", FITS)

    with requests.put(url(server, "full.bin"), data=BIG, auth=AUTH, timeout=60) as response:
        assert response.status_code == 507, response.text
        assert "not enough storage space" in response.text

    assert_no_temps(server)
    assert_content(server, "full.bin", V1)

    with requests.put(url(server, "full-new.bin"), data=BIG, auth=AUTH, timeout=60) as response:
        assert response.status_code == 507, response.text
    assert_no_temps(server)
    assert_content(server, "full-new.bin", None)
    assert_database_writable(server, "full.bin")


@pytest.mark.slow
def test_disk_full_during_last_block_answers_507_not_a_truncated_file(limited):
    """The last 1 MiB block crosses the limit: the kernel writes only part of it.

    That short write must not pass for a complete one: no 201/204 and no file
    cut off at the limit.
    """
    server = limited
    assert put(server, "last.bin", V1) == 201
    straddling = body("straddling", 4 * MiB + 768 * 1024)
    for name, before in (("last.bin", V1), ("last-new.bin", None)):
        status = put(server, name, straddling)
        assert_no_temps(server)
        stored = get(server, name)
        assert status == 507, f"answered {status}; stored {len(stored or b'')} bytes"
        assert stored == before


@pytest.mark.slow
def test_disk_full_chunked_put_answers_507_and_keeps_old_version(limited):
    server = limited
    assert put(server, "full-chunked.bin", V1) == 201

    for name in ("full-chunked.bin", "full-chunked-new.bin"):
        with open_put(server, name, length=None) as sock:
            sender = ChunkedSender(sock, BIG)
            status, text = read_response(sock)
            sender.stop()
        assert status == 507, (status, text, sender.errors)
        assert b"not enough storage space" in text
        assert_no_temps(server)

    assert_content(server, "full-chunked.bin", V1)
    assert_content(server, "full-chunked-new.bin", None)
    assert_database_writable(server, "full-chunked.bin")


# --- 6: concurrent uploads to one path -------------------------------------------------------

RACE_RUNS = 20
RACE_SIZES = [1 * MiB, 2 * MiB, 3 * MiB, 4 * MiB]
RACE_POOL = [random.Random(f"race{k}").randbytes(max(RACE_SIZES)) for k in range(4)]


@pytest.mark.slow
def test_concurrent_puts_leave_exactly_one_whole_version(clean):
    server = clean
    with ThreadPoolExecutor(max_workers=4) as pool:
        for run in range(RACE_RUNS):
            # Distinct content per writer and per run; which writer is largest rotates.
            bodies = []
            for k in range(4):
                label = f"run {run} writer {k}\n".encode()
                size = RACE_SIZES[(k + run) % 4]
                bodies.append(label + RACE_POOL[k][: size - len(label)])
            barrier = threading.Barrier(4)

            def upload(data: bytes, barrier: threading.Barrier = barrier) -> int:
                barrier.wait(timeout=30)
                return put(server, "race.bin", data)

            statuses = list(pool.map(upload, bodies))
            assert all(status in (201, 204) for status in statuses), (run, statuses)
            assert temps(server) == [], (run, "leftover temp files")
            stored = get(server, "race.bin")
            matches = [k for k, data in enumerate(bodies) if stored == data]
            assert len(matches) == 1, (
                f"run {run}: stored {len(stored or b'')} bytes starting"
                f" {(stored or b'')[:24]!r}, which is none of the 4 uploads"
            )


# --- 7: a chunked body that never ends -------------------------------------------------------

CHUNK = 256 * 1024


def start_chunked_upload(server: DavboxServer, name: str, *, mid_chunk: bool) -> socket.socket:
    """PUT chunked, send SENT bytes of v2 in whole chunks (plus half a chunk if ``mid_chunk``),
    never the last chunk; wait until the server has written part of it."""
    sock = open_put(server, name, length=None)
    for offset in range(0, SENT, CHUNK):
        sock.sendall(chunk(V2[offset : offset + CHUNK]))
    if mid_chunk:
        sock.sendall(f"{CHUNK:x}\r\n".encode() + V2[SENT : SENT + CHUNK // 2])
    wait_for_temp(server, MiB)
    return sock


def test_chunked_put_cut_off_before_last_chunk_changes_nothing(clean):
    server = clean
    assert put(server, "chunked.bin", V1) == 201

    # Closed (FIN) between two chunks: the end of the stream is not the end of the body.
    for name in ("chunked.bin", "chunked-new.bin"):
        start_chunked_upload(server, name, mid_chunk=False).close()
        assert_no_temps(server)
    # Closed inside a chunk, and reset.
    start_chunked_upload(server, "chunked.bin", mid_chunk=True).close()
    assert_no_temps(server)
    reset(start_chunked_upload(server, "chunked-new.bin", mid_chunk=False))
    assert_no_temps(server)

    assert_content(server, "chunked.bin", V1)
    assert_content(server, "chunked-new.bin", None)

    # Half-closed between chunks: the client waiting for an answer is told it was refused.
    with start_chunked_upload(server, "chunked.bin", mid_chunk=False) as sock:
        sock.shutdown(socket.SHUT_WR)
        status, text = read_response(sock)
    assert status == 400, (status, text)
    assert b"nothing was stored" in text
    assert_no_temps(server)
    assert_content(server, "chunked.bin", V1)

    # The same upload with its last chunk replaces the file: the chunked path does work.
    with open_put(server, "chunked.bin", length=None) as sock:
        sender = ChunkedSender(sock, V2)
        status, text = read_response(sock)
        sender.stop()
    assert status == 204, (status, text, sender.errors)
    assert_content(server, "chunked.bin", V2)
