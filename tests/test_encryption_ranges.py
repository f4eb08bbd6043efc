"""Encryption at rest: Range GETs are correct for arbitrary offsets and lengths,
segment boundaries included.

Two levels, both property-based (hypothesis):

- ``SealedReader`` straight on a ``SealedStorage`` (temp SQLite database, a
  random master key): files of sizes at and around the 64 KiB segment
  boundaries (and random ones), written in arbitrary chunk sizes, then
  arbitrary sequences of seek/read/readinto (offsets and lengths at
  boundaries, past the end, -1/None) must give exactly the plaintext slices;
  sizes follow from the stored size alone.
- A real encrypted ``davbox serve``: files uploaded with PUT, then Range GETs
  (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``) on ``/dav/...`` and on a read
  link's ``/s/<token>/download`` page must answer exactly as RFC 9110 says:
  206 with the exact bytes and ``Content-Range``, 416 with ``bytes */size``
  for an unsatisfiable range, 200 with the whole (empty) body where the range
  is ignored (an empty file: WsgiDAV and werkzeug both skip ranges for a
  length of 0, which RFC 9110 allows). HEAD and PROPFIND give the plaintext
  size. The server reads in odd-sized blocks (``storage.block_size``), so its
  reads straddle segment boundaries. Where WsgiDAV and werkzeug answered
  differently from RFC 9110 (a reversed range, a zero suffix, a suffix longer
  than the file) davbox corrects them, and error answers to HEAD carry no
  body: ``test_rfc_deviations`` and ``test_error_answers_to_head_have_no_body``.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
import random
import shutil
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import requests
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from davbox import links
from davbox.db import Database
from davbox.keys import KeyRing
from davbox.providers.storage.encrypted import SealedStorage
from davbox.providers.storage.sealed import (
    HEADER_SIZE,
    MAGIC,
    SEGMENT,
    TAG,
    plain_size,
    sealed_size,
)
from tests.davserver import PASSWORD, DavboxServer
from tests.encrypted import encrypted_config

S = SEGMENT
MIB = 1024 * 1024
_names = itertools.count(1)

# No example database in the working tree; no deadline (fsync, a real server).
FAST = settings(max_examples=150, deadline=None, database=None)


def boundaries(size: int, extra: int = S) -> list[int]:
    """Offsets worth trying for a file of ``size`` bytes: around every segment
    boundary up to just past the end, the end itself, and a little beyond."""
    points = {0, 1, 2, size - 2, size - 1, size, size + 1, size + extra}
    last = size // S + 2
    for k in range(1, last + 1):
        points.update({k * S - 1, k * S, k * S + 1})
    return sorted(p for p in points if 0 <= p <= size + extra)


def offsets(size: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(boundaries(size)), st.integers(0, size + S))


# -- the reader, straight on the storage ---------------------------------------------


@dataclass
class Store:
    storage: SealedStorage
    box: Path


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    """A SealedStorage on a temp SQLite database and a random master key (module-wide:
    hypothesis runs every example inside one test call)."""
    root = Path(tempfile.mkdtemp(prefix="davbox-ranges-"))
    db = Database(f"sqlite:///{root / 'keys.db'}")
    try:
        db.upgrade()
        storage = SealedStorage(root / "storage", KeyRing.open(db, os.urandom(32)))
        yield Store(storage, storage.mailbox_dir("ranges"))
    finally:
        db.dispose()
        shutil.rmtree(root, ignore_errors=True)


SIZE_POINTS = sorted(
    {0, 1, 2, 15, 16, 17}
    | {k * S + d for k in range(1, 5) for d in (-1, 0, 1)}
    | {k * S + d for k in range(1, 4) for d in (-16, 16)}
)
sizes = st.one_of(st.sampled_from(SIZE_POINTS), st.integers(0, 4 * S + 100))
chunk_sizes = st.lists(
    st.one_of(
        st.sampled_from([0, 1, 15, 16, 17, 4096, S - 1, S, S + 1, 2 * S + 1]),
        st.integers(1, 3 * S),
    ),
    min_size=1,
    max_size=10,
)


def plaintext(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def store_file(store: Store, data: bytes, chunks: list[int], announce: bool) -> Path:
    """Write ``data`` through the storage's writer in ``chunks`` (cycled a few times,
    then the rest at once) and commit it."""
    target = store.box / f"file{next(_names)}.bin"
    writer = store.storage.writer(target, len(data) if announce else None)
    try:
        pos = 0
        for chunk in itertools.islice(itertools.cycle(chunks), 3 * len(chunks)):
            if pos >= len(data):
                break
            writer.write(data[pos : pos + chunk])
            pos += chunk
        writer.write(data[pos:])
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return target


@st.composite
def reader_cases(draw: st.DrawFn) -> tuple[int, int, list[int], bool, list[tuple[str, int | None]]]:
    size = draw(sizes)
    seed = draw(st.integers(0, 2**32 - 1))
    chunks = draw(chunk_sizes)
    announce = draw(st.booleans())
    lengths = st.one_of(
        st.sampled_from([-1, 0, 1, 2, S - 1, S, S + 1, 2 * S, 2 * S + 1, size, size + 1]),
        st.integers(0, size + S),
        st.none(),
    )
    op = st.one_of(
        st.tuples(st.just("seek"), offsets(size)),
        st.tuples(st.just("seek_cur"), st.integers(-size - S, size + S)),
        st.tuples(st.just("seek_end"), st.integers(-size - S, S)),
        st.tuples(st.just("read"), lengths),
        st.tuples(
            st.just("readinto"),
            st.one_of(st.sampled_from([0, 1, S - 1, S, S + 1]), st.integers(0, 2 * S + 3)),
        ),
    )
    ops = draw(st.lists(op, min_size=1, max_size=14))
    return size, seed, chunks, announce, ops


@FAST
@given(case=reader_cases())
@example(case=(2 * S, 7, [S], True, [("seek", S - 1), ("read", 2), ("read", -1), ("read", 1)]))
@example(
    case=(S + 1, 8, [1, S], False, [("seek_end", -2), ("read", None), ("seek", 0), ("read", S + 1)])
)
@example(case=(0, 9, [0], True, [("read", -1), ("seek", 1), ("read", 5), ("readinto", 3)]))
def test_reader_seek_and_read_give_the_plaintext(store: Store, case) -> None:
    size, seed, chunks, announce, ops = case
    data = plaintext(seed, size)
    path = store_file(store, data, chunks, announce)
    try:
        stored = path.stat().st_size
        assert stored == sealed_size(size)
        assert store.storage.content_size(stored) == size == plain_size(stored)
        raw = path.read_bytes()
        assert raw[: len(MAGIC)] == MAGIC
        if size >= 16:  # stored encrypted: not the plaintext after the header
            assert raw[HEADER_SIZE : HEADER_SIZE + 16] != data[:16]
            assert data[:16] not in raw[HEADER_SIZE:]

        reader = store.storage.open_content(path)
        pos = 0
        with reader:
            assert reader.seekable() and reader.readable()
            for kind, arg in ops:
                assert arg is not None or kind == "read"
                if kind == "read":
                    got = reader.read(arg)
                    want = data[pos:] if arg is None or arg < 0 else data[pos : pos + arg]
                    assert got == want, f"read({arg}) at {pos} of {size}"
                    pos += len(want)
                elif kind == "readinto":
                    buffer = bytearray(b"\xa5" * arg)
                    count = reader.readinto(buffer)
                    want = data[pos : pos + arg]
                    assert count == len(want)
                    assert bytes(buffer[:count]) == want, f"readinto({arg}) at {pos}"
                    assert buffer[count:] == b"\xa5" * (arg - count), "beyond the count untouched"
                    pos += count
                else:
                    base = {"seek": 0, "seek_cur": pos, "seek_end": size}[kind]
                    whence = {
                        "seek": io.SEEK_SET,
                        "seek_cur": io.SEEK_CUR,
                        "seek_end": io.SEEK_END,
                    }[kind]
                    if base + arg < 0:
                        with pytest.raises(ValueError):
                            reader.seek(arg, whence)
                    else:
                        assert reader.seek(arg, whence) == base + arg
                        pos = base + arg
                assert reader.tell() == pos
        assert reader.closed
    finally:
        store.storage.discard_file(path)


@st.composite
def stream_cases(draw: st.DrawFn) -> tuple[int, int, int, int | None, int]:
    size = draw(sizes)
    seed = draw(st.integers(0, 2**32 - 1))
    start = draw(offsets(size))
    length = draw(
        st.one_of(
            st.none(), st.sampled_from([0, 1, S - 1, S, S + 1, size]), st.integers(0, size + S)
        )
    )
    block = draw(st.one_of(st.sampled_from([1, 8192, S - 1, S, S + 1, MIB]), st.integers(1, 3 * S)))
    return size, seed, start, length, block


@FAST
@given(case=stream_cases())
@example(case=(3 * S + 5, 1, S - 1, None, S))
@example(case=(2 * S, 2, 2 * S - 1, 5, 1))
def test_reader_streams_a_range_in_blocks(store: Store, case) -> None:
    """What the servers do for a Range: seek to its start, then read block after block."""
    size, seed, start, length, block = case
    data = plaintext(seed, size)
    path = store_file(store, data, [size or 1], True)
    try:
        with store.storage.open_content(path) as reader:
            reader.seek(start)
            parts = []
            remaining = length
            while remaining is None or remaining > 0:
                chunk = reader.read(block if remaining is None else min(block, remaining))
                if not chunk:
                    break
                assert len(chunk) <= block
                parts.append(chunk)
                if remaining is not None:
                    remaining -= len(chunk)
            want = data[start:] if length is None else data[start : start + length]
            assert b"".join(parts) == want
            assert reader.tell() == start + len(want)
    finally:
        store.storage.discard_file(path)


# -- a real encrypted server ----------------------------------------------------------

USER = "ranger"
BOX = "ranges"
FILES = {
    "empty.bin": 0,
    "one.bin": 1,
    "seg-minus-1.bin": S - 1,
    "seg.bin": S,
    "seg-plus-1.bin": S + 1,
    "two-seg-17.bin": 2 * S + 17,
    "big.bin": 3 * MIB + 5,
}
# An odd block size: the server's reads straddle segment boundaries everywhere.
BLOCK_SIZE = 100_003


class Served:
    """The server, a logged-in session, the uploaded plaintexts and read links to some.

    Not a dataclass: hypothesis prints a dataclass field by field (megabytes here).
    """

    def __init__(
        self,
        server: DavboxServer,
        session: requests.Session,
        files: dict[str, bytes],
        tokens: dict[str, str],  # file name -> token of a read link to it
    ) -> None:
        self.server = server
        self.session = session
        self.files = files
        self.tokens = tokens

    def __repr__(self) -> str:
        return f"Served({self.server.url})"

    def one_shot(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A request on a connection of its own."""
        headers = {"Accept-Encoding": "identity", **kwargs.pop("headers", {})}
        return requests.request(method, url, auth=(USER, PASSWORD), headers=headers, **kwargs)

    def dav(self, name: str) -> str:
        return self.server.dav(f"{BOX}/{name}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    config = encrypted_config(
        tmp_path_factory.mktemp("enc-ranges-conf"), {"storage": {"block_size": BLOCK_SIZE}}
    )
    server = DavboxServer(tmp_path_factory.mktemp("enc-ranges") / "data", config=config).start()
    session = requests.Session()
    try:
        server.add_user(USER)
        server.mailbox(BOX, **{USER: "member"})
        session.auth = (USER, PASSWORD)
        session.headers["Accept-Encoding"] = "identity"
        files = {name: os.urandom(size) for name, size in FILES.items()}
        for name, data in files.items():
            response = session.put(server.dav(f"{BOX}/{name}"), data=data, timeout=60)
            assert response.status_code == 201, (name, response.status_code, response.text)
        tokens = {}
        for name in ("seg-plus-1.bin", "big.bin", "empty.bin"):
            _link, tokens[name] = links.create(
                server.database(), mailbox=BOX, path=f"/{name}", is_folder=False, permission="read"
            )
        yield Served(server, session, files, tokens)
    finally:
        session.close()
        server.stop()


def test_uploads_are_stored_sealed(served: Served) -> None:
    folder = served.server.storage_dir(BOX)
    for name, data in served.files.items():
        raw = (folder / name).read_bytes()
        assert len(raw) == sealed_size(len(data)), name
        assert raw[: len(MAGIC)] == MAGIC, name
        if len(data) >= 16:
            assert data[:16] not in raw, name
        segments = max(1, -(-len(data) // S))
        assert len(raw) == HEADER_SIZE + len(data) + segments * TAG


def test_whole_gets_heads_and_propfind_give_the_plaintext(served: Served) -> None:
    for name, data in served.files.items():
        got = served.session.get(served.dav(name), timeout=60)
        assert got.status_code == 200, name
        assert got.content == data, name
        assert "Content-Range" not in got.headers
        head = served.session.head(served.dav(name), timeout=10)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(len(data)), name
        assert head.headers["Accept-Ranges"] == "bytes"
        assert head.headers["ETag"].endswith(f'-{len(data):x}"'), (
            "the ETag names the plaintext size"
        )

    answer = served.session.request(
        "PROPFIND", served.server.dav(f"{BOX}/"), headers={"Depth": "1"}, timeout=10
    )
    assert answer.status_code == 207
    lengths = {}
    used = None
    for response in ET.fromstring(answer.content).iter("{DAV:}response"):
        href = unquote(response.findtext("{DAV:}href") or "")
        length = response.find(".//{DAV:}getcontentlength")
        if length is not None:
            lengths[href.rsplit("/", 1)[-1]] = int(length.text or "")
        if href.rstrip("/") == f"/dav/{BOX}":
            used = int(response.findtext(".//{DAV:}quota-used-bytes") or "-1")
    assert lengths == {name: len(data) for name, data in served.files.items()}
    assert used == sum(FILES.values()), "usage counts plaintext bytes"


# A Range header: ("from_to", a, b) is bytes=a-b (a <= b), ("from", a, None) is
# bytes=a-, ("suffix", n, None) is bytes=-n (n >= 1).
Spec = tuple[str, int, int | None]


def header(spec: Spec) -> str:
    kind, a, b = spec
    if kind == "from_to":
        return f"bytes={a}-{b}"
    if kind == "from":
        return f"bytes={a}-"
    return f"bytes=-{a}"


def expected(spec: Spec, size: int) -> tuple[int, int, int] | int:
    """RFC 9110's answer: (206, first, last), 416, or 200 (an empty file: range ignored)."""
    if size == 0:
        return 200
    kind, a, b = spec
    if kind == "suffix":
        return 206, max(0, size - a), size - 1
    if a >= size:
        return 416
    if kind == "from" or b is None:
        return 206, a, size - 1
    return 206, a, min(b, size - 1)


def _status(spec: Spec, size: int) -> int:
    want = expected(spec, size)
    return want if isinstance(want, int) else want[0]


def specs(size: int, *, longest_suffix: int | None = None) -> st.SearchStrategy[Spec]:
    points = offsets(size)

    @st.composite
    def from_to(draw: st.DrawFn) -> Spec:
        a = draw(points)
        b = draw(
            st.one_of(
                st.sampled_from([p for p in boundaries(size) if p >= a] or [a]),
                st.integers(a, a + 3),
                st.integers(a, size + S),
            )
        )
        return "from_to", a, b

    top = size + S if longest_suffix is None else longest_suffix
    suffixes = [p for p in boundaries(size) if 1 <= p <= top] or [1]
    return st.one_of(
        from_to(),
        st.tuples(st.just("from"), points, st.none()),
        st.tuples(
            st.just("suffix"),
            st.one_of(st.sampled_from(suffixes), st.integers(1, max(1, top))),
            st.none(),
        ),
    )


def check(response: requests.Response, data: bytes, spec: Spec, *, head: bool = False) -> None:
    size = len(data)
    want = expected(spec, size)
    note = f"{header(spec)} on {size} bytes"
    if want == 200:
        assert response.status_code == 200, note
        assert "Content-Range" not in response.headers, note
        assert response.headers["Content-Length"] == str(size), note
        assert response.content == (b"" if head else data), note
    elif want == 416:
        assert response.status_code == 416, note
        assert response.headers["Content-Range"] == f"bytes */{size}", note
        if size >= 16:
            assert data[:16] not in response.content and data[-16:] not in response.content
    else:
        assert isinstance(want, tuple)
        _, first, last = want
        assert response.status_code == 206, note
        assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}", note
        assert response.headers["Content-Length"] == str(last - first + 1), note
        assert response.content == (b"" if head else data[first : last + 1]), note


@st.composite
def dav_cases(draw: st.DrawFn) -> tuple[str, Spec, str]:
    name = draw(st.sampled_from(sorted(FILES)))
    spec = draw(specs(FILES[name]))
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD"]))
    return name, spec, method


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(case=dav_cases())
@example(case=("big.bin", ("from_to", S - 1, S), "GET"))
@example(case=("big.bin", ("from_to", 3 * MIB, 3 * MIB + 4), "GET"))
@example(case=("big.bin", ("from", 3 * MIB + 5, None), "GET"))
@example(case=("big.bin", ("suffix", 3 * MIB + 6, None), "GET"))
@example(case=("seg.bin", ("from_to", S - 1, S - 1), "GET"))
@example(case=("seg.bin", ("from", S, None), "GET"))
@example(case=("seg-plus-1.bin", ("from", S, None), "GET"))
@example(case=("seg-plus-1.bin", ("suffix", 2, None), "GET"))
@example(case=("two-seg-17.bin", ("from_to", S, 2 * S), "HEAD"))
@example(case=("one.bin", ("from_to", 0, 0), "GET"))
@example(case=("one.bin", ("from", 1, None), "GET"))
@example(case=("empty.bin", ("from", 0, None), "GET"))
@example(case=("empty.bin", ("suffix", 1, None), "GET"))
def test_dav_range_requests(served: Served, case: tuple[str, Spec, str]) -> None:
    name, spec, method = case
    # HEAD on a connection of its own as well (test_error_answers_to_head_have_no_body
    # checks the shared connection case).
    send = served.session.request if method == "GET" else served.one_shot
    response = send(method, served.dav(name), headers={"Range": header(spec)}, timeout=60)
    event(f"{method} answer {_status(spec, FILES[name])}")
    check(response, served.files[name], spec, head=method == "HEAD")


@pytest.mark.parametrize(
    ("path", "range_header", "status"),
    [
        pytest.param("seg-plus-1.bin", f"bytes={S + 1}-", 416, id="unsatisfiable-range"),
        pytest.param("missing.bin", "bytes=0-", 404, id="missing-file"),
    ],
)
def test_error_answers_to_head_have_no_body(
    served: Served, path: str, range_header: str, status: int
) -> None:
    """RFC 9110 9.3.2: an answer to HEAD has no content, errors included; bytes sent after
    it are read as the next answer on the connection (a desynchronised keep-alive)."""
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    head = (
        f"HEAD /dav/{BOX}/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {token}\r\nRange: {range_header}\r\n\r\n"
    )
    get = (
        f"GET /dav/{BOX}/one.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {token}\r\nConnection: close\r\n\r\n"
    )
    received = []
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as sock:
        sock.sendall((head + get).encode())
        while chunk := sock.recv(65536):
            received.append(chunk)
    raw = b"".join(received)
    assert raw.startswith(f"HTTP/1.1 {status} ".encode()), raw[:80]
    rest = raw[raw.index(b"\r\n\r\n") + 4 :]
    assert rest.startswith(b"HTTP/1.1 200 "), f"after the HEAD answer: {rest[:80]!r}"
    assert rest.endswith(b"\r\n\r\n" + served.files["one.bin"])


def test_dav_if_range(served: Served) -> None:
    data = served.files["two-seg-17.bin"]
    etag = served.session.head(served.dav("two-seg-17.bin"), timeout=10).headers["ETag"]
    spec: Spec = ("from_to", S - 3, S + 2)
    same = served.session.get(
        served.dav("two-seg-17.bin"), headers={"Range": header(spec), "If-Range": etag}, timeout=10
    )
    check(same, data, spec)
    other = served.session.get(
        served.dav("two-seg-17.bin"),
        headers={"Range": header(spec), "If-Range": '"not-the-etag"'},
        timeout=10,
    )
    assert other.status_code == 200 and other.content == data, "a changed file: all of it"


@st.composite
def link_cases(draw: st.DrawFn) -> tuple[str, Spec]:
    name = draw(st.sampled_from(["seg-plus-1.bin", "big.bin", "empty.bin"]))
    size = FILES[name]
    # bytes=-n with n > size: werkzeug's 416 (see test_rfc_deviations).
    return name, draw(specs(size, longest_suffix=size))


@settings(max_examples=60, deadline=None, database=None)
@given(case=link_cases())
@example(
    case=(
        "seg-plus-1.bin",
        ("from_to", S - 1, S),
    )
)
@example(case=("seg-plus-1.bin", ("from", S, None)))
@example(case=("seg-plus-1.bin", ("from", S + 1, None)))
@example(case=("seg-plus-1.bin", ("suffix", S + 1, None)))
@example(
    case=(
        "big.bin",
        ("from_to", 2 * S - 1, 3 * S),
    )
)
@example(case=("big.bin", ("from_to", 3 * MIB + 5, 3 * MIB + 9)))
@example(case=("big.bin", ("suffix", 17, None)))
@example(case=("empty.bin", ("from", 0, None)))
def test_link_download_ranges(served: Served, case: tuple[str, Spec]) -> None:
    """A read link to one file, its download page: no login, no cookie needed."""
    name, spec = case
    response = requests.get(
        f"{served.server.url}/s/{served.tokens[name]}/download",
        headers={"Range": header(spec), "Accept-Encoding": "identity"},
        timeout=60,
    )
    event(f"answer {_status(spec, FILES[name])}")
    check(response, served.files[name], spec)
    if response.status_code in (200, 206):
        assert response.headers["Content-Disposition"].startswith("attachment;")
        assert response.headers["Accept-Ranges"] == "bytes"


def _link_get(served: Served, name: str, range_header: str) -> requests.Response:
    return requests.get(
        f"{served.server.url}/s/{served.tokens[name]}/download",
        headers={"Range": range_header},
        timeout=10,
    )


def _dav_get(served: Served, name: str, range_header: str) -> requests.Response:
    return served.session.get(served.dav(name), headers={"Range": range_header}, timeout=10)


TAIL = f"bytes */{S + 1}"


@pytest.mark.parametrize(
    ("via", "range_header", "allowed"),
    [
        pytest.param(
            _dav_get,
            "bytes=5-3",
            {200: None, 416: TAIL},  # an invalid range: ignore it or reject it
            id="dav-reversed",
        ),
        pytest.param(
            _dav_get,
            "bytes=-0",
            {200: None, 416: TAIL},  # a zero suffix is unsatisfiable (or ignored)
            id="dav-zero-suffix",
        ),
        pytest.param(
            _link_get,
            "bytes=-70000",
            {206: f"bytes 0-{S}/{S + 1}"},  # a suffix longer than the file: all of it
            id="link-long-suffix",
        ),
    ],
)
def test_rfc_deviations(served: Served, via, range_header: str, allowed: dict) -> None:
    """What RFC 9110 (sections 14.1-14.2) wants where WsgiDAV 4.4 and werkzeug 3.1 answer
    otherwise (``bytes=5-3`` as the suffix -3, ``bytes=-0`` with a Content-Range past the
    end, a long suffix as 416): davbox drops the first two and serves the third whole."""
    name = "seg-plus-1.bin"
    data = served.files[name]
    response = via(served, name, range_header)
    if response.status_code == 206:  # whatever is claimed, the bytes must be those
        claimed = response.headers["Content-Range"].removeprefix("bytes ").split("/")[0]
        first, last = (int(x) for x in claimed.split("-"))
        assert response.content == data[first : last + 1]
    assert response.status_code in allowed, f"{range_header}: {response.status_code}"
    assert response.headers.get("Content-Range") == allowed[response.status_code]
    if response.status_code in (200, 206):
        assert response.content == data
