"""Encryption at rest against a real server: sealed on disk, plain to clients, tamper-evident.

Covers the format's guarantees end to end: sizes, ETags, COPY/MOVE and link
pages are as without encryption; the tamper matrix (flipped, cut, extended,
swapped and foreign bytes) is refused with 5xx and an audit record, never
with wrong plaintext; no byte of an uploaded text is anywhere on disk, not
even while it arrives; deletion destroys the data key; the server refuses to
start with a missing or wrong key; turning encryption on encrypts what is
stored; litmus passes on an encrypted mailbox.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import re
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from davbox import app_passwords
from davbox.keys import new_master_key
from davbox.providers.storage.sealed import (
    HEADER_SIZE,
    MAGIC,
    SEGMENT,
    TAG,
    Header,
    sealed_size,
)
from tests.davserver import PASSWORD, DavboxServer
from tests.encrypted import encrypted_config
from tests.test_clients import run_litmus
from tests.test_link_pages import LinkClient, make_link

STEP = SEGMENT + TAG
# Distinctive text: if these bytes are anywhere on disk, something stored plaintext.
MARKER = b"VERTROUWELIJK-salarisoverzicht-Q3-Jansen-7f3a9c"


@pytest.fixture(scope="module")
def enc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    root = tmp_path_factory.mktemp("encrypted")
    server = DavboxServer(root / "data", config=encrypted_config(root / "conf")).start()
    server.add_user("ann")
    server.mailbox("box", ann="manager")
    yield server
    server.stop()


AUTH = ("ann", PASSWORD)


def url(server: DavboxServer, path: str) -> str:
    return server.dav("box/" + path.lstrip("/"))


def put(server: DavboxServer, path: str, data: bytes) -> requests.Response:
    answer = requests.put(url(server, path), data=data, auth=AUTH, timeout=30)
    assert answer.status_code in (201, 204), answer.text
    return answer


def stored(server: DavboxServer, path: str) -> Path:
    return server.storage_dir("box") / path.lstrip("/")


def records(server: DavboxServer, *args: str) -> list[dict[str, Any]]:
    return json.loads(server.cli("audit", "query", "--format", "json", *args).stdout)


def integrity_records(server: DavboxServer, path: str) -> list[dict[str, Any]]:
    return [r for r in records(server, "--event", "integrity-failed") if r["path"] == path]


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


# -- transparent to clients --------------------------------------------------------------


def test_files_are_sealed_on_disk_and_plain_to_clients(enc):
    text = MARKER + b"\n" * 10
    data = random_bytes(3 * SEGMENT + 1234)
    assert requests.request("MKCOL", url(enc, "plain"), auth=AUTH, timeout=10).status_code == 201
    answer = put(enc, "plain/t.txt", text)
    put(enc, "plain/r.bin", data)

    for name, content in (("t.txt", text), ("r.bin", data)):
        raw = stored(enc, f"plain/{name}").read_bytes()
        assert raw[:7] == MAGIC and len(raw) == sealed_size(len(content))
        assert content not in raw
        got = requests.get(url(enc, f"plain/{name}"), auth=AUTH, timeout=30)
        assert got.status_code == 200 and got.content == content
        assert int(got.headers["Content-Length"]) == len(content)

    listing = requests.request(
        "PROPFIND", url(enc, "plain/"), headers={"Depth": "1"}, auth=AUTH, timeout=10
    ).text
    sizes = dict(
        re.findall(r"<d:href>[^<]*/([^/<]+)</d:href>.*?getcontentlength>(\d+)<", listing, re.S)
    )
    assert sizes == {"t.txt": str(len(text)), "r.bin": str(len(data))}
    # The ETag a PUT answers is the one PROPFIND and GET give (sync clients rely on it).
    head = requests.head(url(enc, "plain/t.txt"), auth=AUTH, timeout=10)
    assert answer.headers["ETag"] == head.headers["ETag"]
    assert f'{len(text):x}"' in head.headers["ETag"]

    # COPY makes a file with its own key; MOVE keeps it readable.
    dest = url(enc, "plain/copy.bin")
    assert (
        requests.request(
            "COPY", url(enc, "plain/r.bin"), headers={"Destination": dest}, auth=AUTH, timeout=30
        ).status_code
        == 201
    )
    original = Header.parse(stored(enc, "plain/r.bin").read_bytes()[:HEADER_SIZE])[0]
    copied = Header.parse(stored(enc, "plain/copy.bin").read_bytes()[:HEADER_SIZE])[0]
    assert copied.file_id != original.file_id
    moved = url(enc, "plain/moved.txt")
    assert (
        requests.request(
            "MOVE", url(enc, "plain/t.txt"), headers={"Destination": moved}, auth=AUTH, timeout=10
        ).status_code
        == 201
    )
    assert requests.get(dest, auth=AUTH, timeout=30).content == data
    assert requests.get(moved, auth=AUTH, timeout=10).content == text


def test_link_pages_send_the_plaintext(enc):
    data = random_bytes(2 * SEGMENT + 5)
    requests.request("MKCOL", url(enc, "shared"), auth=AUTH, timeout=10)
    put(enc, "shared/a.bin", data)
    put(enc, "shared/b.txt", MARKER)
    _link, token = make_link(enc, "box", "/shared", "read")
    client = LinkClient(enc)
    assert client.get(f"/s/{token}").status_code == 200
    whole = client.get(f"/s/{token}/files/a.bin")
    assert whole.status_code == 200 and whole.content == data
    part = client.get(
        f"/s/{token}/files/a.bin", headers={"Range": f"bytes={SEGMENT - 3}-{SEGMENT + 3}"}
    )
    assert part.status_code == 206 and part.content == data[SEGMENT - 3 : SEGMENT + 4]
    archive = client.get(f"/s/{token}/zip")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert zipped.read("shared/a.bin") == data
        assert zipped.read("shared/b.txt") == MARKER


# -- nothing readable on disk ----------------------------------------------------------------


def _disk_holds(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_no_byte_of_an_uploaded_text_is_on_disk(enc, tmp_path):
    text = (MARKER + b" regel\n") * 60000  # 3.3 MB: WsgiDAV reads the body by the MiB
    requests.request("MKCOL", url(enc, "secret"), auth=AUTH, timeout=10)

    # While it arrives: half a body sent, the temp file holds only ciphertext.
    with socket.create_connection(("127.0.0.1", enc.port)) as sock:
        token = app_passwords.create(enc.database(), "ann", f"raw-{time.monotonic_ns()}")
        basic = base64.b64encode(f"ann:{token}".encode()).decode()
        head = (
            f"PUT /dav/box/secret/slow.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Basic {basic}\r\nContent-Length: {len(text)}\r\n\r\n"
        )
        sock.sendall(head.encode() + text[:2_500_000])
        time.sleep(0.5)
        temps = [p for p in (enc.data_dir / "storage" / "tmp").iterdir() if p.is_file()]
        assert temps, "the upload is written to a temp file while it arrives"
        assert sum(p.stat().st_size for p in temps) >= 1024 * 1024
        assert _disk_holds(enc.data_dir, MARKER) == []
        sock.sendall(text[2_500_000:])
        assert b" 201 " in sock.recv(4096).split(b"\r\n")[0] + b" "

    put(enc, "secret/whole.txt", text)
    chunked = requests.put(
        url(enc, "secret/chunked.txt"),
        data=iter([text[:70000], text[70000:]]),
        auth=AUTH,
        timeout=30,
    )
    assert chunked.status_code == 201
    _drop, token = make_link(enc, "box", "/secret", "drop")
    client = LinkClient(enc)
    assert client.get(f"/s/{token}").status_code == 200
    assert client.upload(f"/s/{token}", "dropped.txt", text).status_code == 201

    for name in ("slow.txt", "whole.txt", "chunked.txt", "dropped.txt"):
        assert requests.get(url(enc, f"secret/{name}"), auth=AUTH, timeout=30).content == text
    # The data directory (database, storage, temps), the server's log and config.
    assert _disk_holds(enc.data_dir.parent, MARKER) == []


# -- tampering ---------------------------------------------------------------------------------


def _segments(raw: bytes) -> list[bytes]:
    body = raw[HEADER_SIZE:]
    return [body[i : i + STEP] for i in range(0, len(body), STEP)]


def _join(header: bytes, segments: list[bytes]) -> bytes:
    return header + b"".join(segments)


def _flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1 :]


# name -> (how the victim's stored bytes change, given the victim's and another file's)
TAMPERING: dict[str, Callable[[bytes, bytes], bytes]] = {
    "flipped byte in a segment": lambda v, o: _flip(v, HEADER_SIZE + STEP + 100),
    "flipped byte in the last segment": lambda v, o: _flip(v, len(v) - 3),
    "flipped byte in the wrapped key": lambda v, o: _flip(v, 70),
    "flipped byte in the file id": lambda v, o: _flip(v, 20),
    "cut at a segment boundary": lambda v, o: v[: HEADER_SIZE + 2 * STEP],
    "cut inside a segment": lambda v, o: v[: HEADER_SIZE + 2 * STEP + 999],
    "cut to the header": lambda v, o: v[:HEADER_SIZE],
    "extended": lambda v, o: v + os.urandom(100),
    "segments swapped": lambda v, o: _join(
        v[:HEADER_SIZE], [_segments(v)[1], _segments(v)[0], *_segments(v)[2:]]
    ),
    "a segment dropped": lambda v, o: _join(v[:HEADER_SIZE], [_segments(v)[0], *_segments(v)[2:]]),
    "another file's segment copied in": lambda v, o: _join(
        v[:HEADER_SIZE], [_segments(v)[0], _segments(o)[1], *_segments(v)[2:]]
    ),
    "another file's ciphertext copied over": lambda v, o: v[:HEADER_SIZE] + o[HEADER_SIZE:],
    "another file's header": lambda v, o: o[:HEADER_SIZE] + v[HEADER_SIZE:],
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampering_is_refused_with_5xx_and_recorded(enc, case):
    # Same sizes, so that the foreign bytes fit exactly: 3 full segments and a part.
    victim_data, other_data = random_bytes(3 * SEGMENT + 777), random_bytes(3 * SEGMENT + 777)
    folder = f"t{abs(hash(case)) % 10**8}"
    requests.request("MKCOL", url(enc, folder), auth=AUTH, timeout=10)
    put(enc, f"{folder}/victim.bin", victim_data)
    put(enc, f"{folder}/other.bin", other_data)
    victim, other = stored(enc, f"{folder}/victim.bin"), stored(enc, f"{folder}/other.bin")
    victim.write_bytes(TAMPERING[case](victim.read_bytes(), other.read_bytes()))

    got = requests.get(url(enc, f"{folder}/victim.bin"), auth=AUTH, timeout=30)
    assert got.status_code == 500
    assert "failed its integrity check" in got.text
    assert other_data[:64] not in got.content and victim_data[:64] not in got.content
    # A range over the damage is refused too; COPY of the file stores nothing.
    ranged = requests.get(
        url(enc, f"{folder}/victim.bin"), headers={"Range": "bytes=100-"}, auth=AUTH, timeout=30
    )
    assert ranged.status_code == 500
    copy = requests.request(
        "COPY",
        url(enc, f"{folder}/victim.bin"),
        headers={"Destination": url(enc, f"{folder}/copy.bin")},
        auth=AUTH,
        timeout=30,
    )
    assert copy.status_code == 500
    assert requests.head(url(enc, f"{folder}/copy.bin"), auth=AUTH, timeout=10).status_code == 404

    found = integrity_records(enc, f"/{folder}/victim.bin")
    assert len(found) >= 3, found
    assert found[0]["actor"] == "ann" and found[0]["status"] == 500
    assert found[0]["mailbox"] == "box" and found[0]["reason"]
    # The other file is untouched and still fine.
    assert (
        requests.get(url(enc, f"{folder}/other.bin"), auth=AUTH, timeout=30).content == other_data
    )


def test_damage_found_mid_download_cuts_the_connection(enc):
    """Past the first block the status is sent already: the answer is cut, never wrong."""
    data = random_bytes(40 * SEGMENT)
    put(enc, "big.bin", data)
    path = stored(enc, "big.bin")
    path.write_bytes(_flip(path.read_bytes(), HEADER_SIZE + 30 * STEP + 5))
    received = bytearray()
    answer = requests.get(url(enc, "big.bin"), auth=AUTH, stream=True, timeout=30)
    assert answer.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError), answer:
        for chunk in answer.iter_content(65536):
            received += chunk
    assert 0 < len(received) <= 30 * SEGMENT
    assert bytes(received) == data[: len(received)], "only authenticated bytes were sent"
    assert integrity_records(enc, "/big.bin")


def test_a_tampered_file_on_a_link_page_is_a_500_page_and_recorded(enc):
    requests.request("MKCOL", url(enc, "linked"), auth=AUTH, timeout=10)
    put(enc, "linked/x.bin", random_bytes(SEGMENT + 10))
    path = stored(enc, "linked/x.bin")
    path.write_bytes(_flip(path.read_bytes(), HEADER_SIZE + 10))
    link, token = make_link(enc, "box", "/linked", "read")
    client = LinkClient(enc)
    page = client.get(f"/s/{token}/files/x.bin")
    assert page.status_code == 500
    assert "failed its integrity check" in page.text
    [record] = integrity_records(enc, "/linked/x.bin")
    assert record["actor"] == f"link-{link.id}"


# -- crypto-shredding --------------------------------------------------------------------------


def _key_destroyed(fd: int) -> bool:
    header = os.pread(fd, HEADER_SIZE, 0)
    return header[:7] == MAGIC and header[48:108] == bytes(60)


def test_deleting_or_replacing_a_file_destroys_its_data_key(enc):
    requests.request("MKCOL", url(enc, "shred"), auth=AUTH, timeout=10)
    held: dict[str, int] = {}

    def hold(name: str) -> None:
        put(enc, f"shred/{name}", random_bytes(5000))
        held[name] = os.open(stored(enc, f"shred/{name}"), os.O_RDONLY)
        assert not _key_destroyed(held[name])

    try:
        hold("deleted.bin")
        assert (
            requests.delete(url(enc, "shred/deleted.bin"), auth=AUTH, timeout=10).status_code == 204
        )
        hold("overwritten.bin")
        put(enc, "shred/overwritten.bin", b"new content")
        hold("moved-over.bin")
        put(enc, "shred/source.bin", b"the source")
        assert (
            requests.request(
                "MOVE",
                url(enc, "shred/source.bin"),
                headers={"Destination": url(enc, "shred/moved-over.bin"), "Overwrite": "T"},
                auth=AUTH,
                timeout=10,
            ).status_code
            == 204
        )
        hold("expired.bin")
        enc.cli("expiry", "set", "box/shred/expired.bin", "--in", "1m")
        later = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 3600))
        assert "1 file(s) deleted" in enc.cli("expiry", "run", "--now", later).stdout
        requests.request("MKCOL", url(enc, "shred/folder"), auth=AUTH, timeout=10)
        put(enc, "shred/folder/inner.bin", random_bytes(100))
        held["folder"] = os.open(stored(enc, "shred/folder/inner.bin"), os.O_RDONLY)
        assert requests.delete(url(enc, "shred/folder"), auth=AUTH, timeout=10).status_code == 204

        for name, fd in held.items():
            assert _key_destroyed(fd), f"{name}: the data key is still on disk"
        assert requests.get(url(enc, "shred/overwritten.bin"), auth=AUTH, timeout=10).content == (
            b"new content"
        )
        assert requests.get(url(enc, "shred/moved-over.bin"), auth=AUTH, timeout=10).content == (
            b"the source"
        )
    finally:
        for fd in held.values():
            os.close(fd)


# -- keys: refusing to start, turning encryption on -------------------------------------------


def _start_fails(server: DavboxServer) -> str:
    with pytest.raises(RuntimeError, match="exited early"):
        server.start(timeout=30)
    text = server.log_text()
    assert "Traceback" not in text
    return text


def test_the_server_refuses_to_start_without_the_right_key(make_server, tmp_path):
    conf = tmp_path / "conf"
    config = encrypted_config(conf)
    key_text = (conf / "master.key").read_text().strip()
    server = make_server("keyed", config=config)
    put_auth = (server.add_user("kim")[0], PASSWORD)
    server.mailbox("kbox", kim="manager")
    assert (
        requests.put(server.dav("kbox/a.txt"), data=b"x", auth=put_auth, timeout=10).status_code
        == 201
    )
    server.stop()

    (conf / "master.key").write_text(new_master_key() + "\n")
    log = _start_fails(server)
    assert "the master key does not open key-encryption key" in log
    assert "not the key this storage was encrypted with" in log

    (conf / "master.key").unlink()
    log = _start_fails(server)
    assert re.search(
        r"config\.yaml:\d+: storage\.encryption\.master_key: cannot read secret file", log
    )

    (conf / "master.key").write_text("too-short\n")
    log = _start_fails(server)
    assert "must be 64 hexadecimal digits" in log

    server.config = tmp_path / "no-encryption.yaml"
    server.config.write_text("storage: {}\n")
    log = _start_fails(server)
    assert "the storage is encrypted, but no key is configured" in log

    server.config = config
    (conf / "master.key").write_text(key_text + "\n")
    server.start()
    assert requests.get(server.dav("kbox/a.txt"), auth=put_auth, timeout=10).content == b"x"
    everything = server.log_text() + "".join(server.output)
    assert key_text not in everything, "the master key never reaches a log"


def test_turning_encryption_on_encrypts_the_files_already_stored(make_server, tmp_path):
    server = make_server("later")
    server.add_user("lea")
    server.mailbox("lbox", lea="manager")
    auth = ("lea", PASSWORD)
    contents = {f"f{i}.bin": random_bytes(i * 40000) for i in range(4)}
    contents["note.txt"] = MARKER
    for name, data in contents.items():
        assert requests.put(server.dav(f"lbox/{name}"), data=data, auth=auth, timeout=10).ok
    folder = server.storage_dir("lbox")
    assert (folder / "note.txt").read_bytes() == MARKER  # stored plain so far
    server.stop()

    server.config = encrypted_config(tmp_path / "later-conf")
    server.start()
    for name, data in contents.items():
        assert (folder / name).read_bytes()[:7] == MAGIC
        assert requests.get(server.dav(f"lbox/{name}"), auth=auth, timeout=10).content == data
    status = server.cli("keys", "status").stdout
    assert "files not encrypted: 0" in status
    assert re.search(r"current\tcreated \S+\t5 file\(s\)", status), status


# -- real clients -----------------------------------------------------------------------------


@pytest.mark.clients
def test_litmus_passes_on_an_encrypted_mailbox(make_server, tmp_path):
    server = make_server("litmus-enc", config=encrypted_config(tmp_path / "lconf"))
    run, passed, failed, out = run_litmus(server, "sealed", tmp_path)
    assert (run, passed, failed) == (104, 104, 0), out
    folder = server.storage_dir("sealed")
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert all(p.read_bytes()[:7] == MAGIC for p in files), "litmus's files are sealed too"


# -- a GET while the file is overwritten ---------------------------------------------------


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "encrypted"])
def test_a_download_during_overwrites_is_one_whole_version(make_server, tmp_path, sealed):
    """Headers and body come from one version: the file is opened before the answer
    starts, and an overwrite (or its key being destroyed) does not touch what is open."""
    config = encrypted_config(tmp_path / "race-conf") if sealed else None
    server = make_server("race", config=config)
    server.add_user("rita")
    server.mailbox("rbox", rita="member")
    auth = ("rita", PASSWORD)
    url = server.dav("rbox/f.bin")
    versions: dict[str, int] = {}
    guard = threading.Lock()
    first = os.urandom(1000)
    versions[hashlib.sha256(first).hexdigest()] = len(first)
    assert requests.put(url, data=first, auth=auth, timeout=10).status_code == 201
    stop = threading.Event()
    bad: list[object] = []
    reads = [0]

    def overwrite() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                data = os.urandom(random.choice([0, 1, 100, SEGMENT - 1, SEGMENT + 1, 200_000]))
                with guard:
                    versions[hashlib.sha256(data).hexdigest()] = len(data)
                if session.put(url, data=data, auth=auth, timeout=10).status_code not in (201, 204):
                    bad.append("put")

    def download() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                got = session.get(url, auth=auth, timeout=10)
                digest = hashlib.sha256(got.content).hexdigest()
                with guard:
                    known = versions.get(digest)
                if got.status_code != 200 or known is None:
                    bad.append((got.status_code, len(got.content), got.headers.get("ETag")))
                elif int(got.headers["Content-Length"]) != known:
                    bad.append(("length", got.headers["Content-Length"], known))
                reads[0] += 1

    threads = [threading.Thread(target=overwrite) for _ in range(2)]
    threads += [threading.Thread(target=download) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join()
    assert reads[0] > 50, reads
    assert bad == [], bad[:5]
    assert "integrity" not in server.log_text(), "an overwrite is not damage"
