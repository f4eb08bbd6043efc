"""Key rotation (``davbox keys rotate``) while a server serves reads and writes.

Everything stays readable during and after the rotation, every stored file ends
up wrapped by the new key-encryption key (KEK), the old KEK is destroyed, and a
restarted server reads everything without it. Also: ``keys rotate`` without
encryption, and ``keys generate``.
"""

from __future__ import annotations

import json
import os
import random
import re
import stat
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree

import requests
from sqlalchemy import select

from davbox.db.models import EncryptionKey
from davbox.providers.storage.sealed import SEGMENT, kek_of
from tests.davserver import PASSWORD, DavboxServer
from tests.encrypted import encrypted_server

USER = "member"
AUTH = (USER, PASSWORD)
MAILBOX = "vault"
WORKERS = 4
# Sizes around the 64 KiB segment size: empty, one byte, a segment exactly,
# one byte either side, several segments.
SIZES = [0, 1, 100, 4096, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT + 17, 200_000]
STATIC = 10  # seeded files the workers only read: the rotation must rewrap them
SHARED = 20  # seeded files the workers overwrite (each owned by one worker)


def url(server: DavboxServer, name: str) -> str:
    return server.dav(f"{MAILBOX}/{name}")


def put(session: requests.Session, server: DavboxServer, name: str, data: bytes) -> int:
    return session.put(url(server, name), data=data, auth=AUTH, timeout=30).status_code


def read_all(server: DavboxServer, contents: dict[str, bytes]) -> None:
    """Every file GETs exactly its last written content."""
    with requests.Session() as session:
        for name, data in sorted(contents.items()):
            response = session.get(url(server, name), auth=AUTH, timeout=30)
            assert response.status_code == 200, (name, response.status_code)
            assert response.content == data, f"{name}: wrong content after rotation"


class Load:
    """Worker threads that write, overwrite and read files until ``stop()``.

    Each worker owns its names, so it knows their last content (and size)
    exactly; all of them read the files only read (``static-*``), which the
    rotation rewraps under those reads. (A worker does not read another's files:
    a GET racing an overwrite of the same file is a matter of its own, not of
    key rotation.)
    """

    def __init__(self, server: DavboxServer, contents: dict[str, bytes]) -> None:
        self.server = server
        self.contents = contents  # name -> last content answered 201/204
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self.ops: dict[str, int] = {"put": 0, "get": 0, "range": 0, "propfind": 0, "static": 0}
        self.static = sorted(n for n in contents if n.startswith("static-"))
        self.owned: list[list[str]] = [[] for _ in range(WORKERS)]
        for index, name in enumerate(sorted(n for n in contents if n.startswith("shared-"))):
            self.owned[index % WORKERS].append(name)
        self.threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(WORKERS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a worker hangs"

    def _count(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1

    def _error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def _run(self, worker: int) -> None:
        rng = random.Random(worker * 7919 + int(time.time()))
        mine = self.owned[worker]
        serial = 0
        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    self._step(session, rng, worker, mine, serial)
                except Exception as exc:  # a dropped connection is an error too
                    self._error(f"worker {worker}: {exc!r}")
                serial += 1

    def _step(
        self,
        session: requests.Session,
        rng: random.Random,
        worker: int,
        mine: list[str],
        serial: int,
    ) -> None:
        choice = rng.random()
        if choice < 0.3:  # overwrite one of mine, or a new file now and then
            if serial % 5 == 0:
                name = f"new-{worker}-{serial}.bin"
                mine.append(name)
            else:
                name = rng.choice(mine)
            data = os.urandom(rng.choice(SIZES))
            status = put(session, self.server, name, data)
            if status in (201, 204):
                with self.lock:
                    self.contents[name] = data
                self._count("put")
            else:
                self._error(f"PUT {name}: {status}")
        elif choice < 0.55:  # GET one of mine: exactly its last content
            name = rng.choice(mine)
            with self.lock:
                expected = self.contents.get(name)
            if expected is None:
                return  # its first PUT failed (recorded)
            response = session.get(url(self.server, name), auth=AUTH, timeout=30)
            if response.status_code != 200:
                self._error(f"GET {name}: {response.status_code}")
            elif response.content != expected:
                self._error(f"GET {name}: wrong bytes ({len(response.content)}/{len(expected)})")
            else:
                self._count("get")
        elif choice < 0.75:  # a range of one of mine, often across a segment boundary
            name = rng.choice(mine)
            with self.lock:
                expected = self.contents.get(name)
            if not expected or len(expected) < 2:
                return
            start = rng.randrange(len(expected) - 1)
            if len(expected) > SEGMENT + 10 and rng.random() < 0.5:
                start = SEGMENT - rng.randrange(1, 10)
            end = rng.randrange(start, min(len(expected), start + 2 * SEGMENT))
            response = session.get(
                url(self.server, name),
                auth=AUTH,
                headers={"Range": f"bytes={start}-{end}"},
                timeout=30,
            )
            if response.status_code != 206:
                self._error(f"GET {name} bytes={start}-{end}: {response.status_code}")
            elif response.content != expected[start : end + 1]:
                self._error(f"GET {name} bytes={start}-{end}: wrong bytes")
            else:
                self._count("range")
        elif choice < 0.9:  # a file only read: the rotation rewraps it under the reads
            name = rng.choice(self.static)
            response = session.get(url(self.server, name), auth=AUTH, timeout=30)
            if response.status_code != 200 or response.content != self.contents[name]:
                self._error(f"GET static {name}: {response.status_code} or wrong bytes")
            else:
                self._count("static")
        else:  # a listing: the sizes of mine (from the stored sizes) are exact
            response = session.request(
                "PROPFIND",
                self.server.dav(MAILBOX + "/"),
                auth=AUTH,
                headers={"Depth": "1"},
                timeout=30,
            )
            if response.status_code != 207:
                self._error(f"PROPFIND: {response.status_code}")
                return
            sizes = listed_sizes(response.content)
            with self.lock:
                lengths = {n: len(self.contents[n]) for n in mine if n in self.contents}
            wrong = {n: (sizes.get(n), size) for n, size in lengths.items() if sizes.get(n) != size}
            if wrong:
                self._error(f"PROPFIND: wrong sizes (listed, written): {wrong}")
            else:
                self._count("propfind")


def listed_sizes(multistatus: bytes) -> dict[str, int]:
    """File name -> getcontentlength of a PROPFIND answer (folders left out)."""
    sizes = {}
    for response in ElementTree.fromstring(multistatus).iter("{DAV:}response"):
        href = response.findtext("{DAV:}href") or ""
        length = response.findtext(".//{DAV:}getcontentlength")
        if length is not None and not href.endswith("/"):
            sizes[unquote(href.rsplit("/", 1)[-1])] = int(length)
    return sizes


def seed(server: DavboxServer) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    with requests.Session() as session:
        for index in range(STATIC + SHARED):
            kind = "static" if index < STATIC else "shared"
            name = f"{kind}-{index}.bin"
            data = os.urandom(SIZES[index % len(SIZES)] + (index if index % 3 else 0))
            assert put(session, server, name, data) == 201
            contents[name] = data
    assert max(len(d) for d in contents.values()) > SEGMENT
    return contents


def status_lines(server: DavboxServer) -> dict[str, str]:
    """``keys status``: KEK id -> its state (current, in use, retired ...)."""
    out = server.cli("keys", "status").stdout
    assert out.startswith("encryption at rest: on"), out
    states = {}
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and re.fullmatch(r"[0-9a-f]{16}", fields[0]):
            states[fields[0]] = fields[1]
    return states


def rotate_under_load(
    server: DavboxServer, contents: dict[str, bytes], retired_before: set[str]
) -> tuple[str, str]:
    """One rotation while four workers read and write; every check of the issue.

    Returns the (old, new) KEK ids."""
    store = server.storage_dir(MAILBOX)
    old = {kek_of(store / name) for name in contents}
    assert len(old) == 1 and None not in old, old
    (old_kek,) = old
    states = status_lines(server)
    assert states[old_kek] == "current" and len(states) == len(retired_before) + 1
    assert {k for k, s in states.items() if s.startswith("retired ")} == retired_before

    load = Load(server, contents)
    load.start()
    time.sleep(0.5)  # the workers are busy before the rotation begins
    before = dict(load.ops)
    started = time.monotonic()
    try:
        result = server.cli("keys", "rotate", "--grace", "1", check=False)
    finally:
        during = {k: load.ops[k] - before[k] for k in before}
        load.stop()
    took = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert "cannot rewrap" not in result.stdout + result.stderr
    assert load.errors == [], load.errors[:20]
    # The workers really worked while the keys changed (seconds of it).
    assert took > 2.5
    assert all(during[op] >= 5 for op in during), during
    new = re.search(r"current key-encryption key: ([0-9a-f]{16})", result.stdout)
    assert new, result.stdout
    new_kek = new.group(1)
    assert new_kek != old_kek and new_kek not in retired_before
    assert f"retired key-encryption key {old_kek}" in result.stdout

    read_all(server, contents)

    states = status_lines(server)
    assert states[new_kek] == "current"
    assert states[old_kek].startswith("retired ")
    assert [k for k, s in states.items() if s == "current"] == [new_kek]
    assert {k for k, s in states.items() if s.startswith("retired ")} == retired_before | {old_kek}

    with server.database().session() as session:
        rows = {r.id: r for r in session.execute(select(EncryptionKey)).scalars()}
        assert rows[old_kek].wrapped is None and rows[old_kek].retired_at is not None
        assert not rows[old_kek].current
        assert rows[new_kek].wrapped is not None and rows[new_kek].retired_at is None
        assert rows[new_kek].current
        assert [k for k, r in rows.items() if r.wrapped is not None] == [new_kek]

    stored = [Path(folder, n) for folder, _d, names in os.walk(store) for n in names]
    assert len(stored) == len(contents)
    assert {p.name: kek_of(p) for p in stored} == dict.fromkeys(contents, new_kek)

    records = json.loads(
        server.cli("audit", "query", "--event", "keys-rotated", "--format", "json").stdout
    )
    mine = [r for r in records if r.get("kek") == new_kek]
    assert len(mine) == 1, records
    assert mine[0]["retired"] == old_kek
    assert mine[0]["actor"] == "admin"
    # The files only read (never rewritten meanwhile) were rewrapped, not copied.
    assert mine[0]["rewrapped"] >= STATIC

    log = server.log_text()
    assert "integrity check" not in log and "Traceback" not in log
    return old_kek, new_kek


def test_rotation_under_load_then_restart_without_the_old_key(
    make_server: Any, tmp_path: Path
) -> None:
    server = encrypted_server(make_server, tmp_path)
    server.add_user(USER)
    server.mailbox(MAILBOX, **{USER: "member"})
    contents = seed(server)

    first_old, first_new = rotate_under_load(server, contents, set())
    server.stop()
    server.start()  # the old KEK is destroyed: nothing may need it
    read_all(server, contents)

    # A second rotation on the same data: likewise, two retired keys then.
    second_old, second_new = rotate_under_load(server, contents, {first_old})
    assert second_old == first_new and second_new not in (first_old, first_new)
    server.stop()
    server.start()
    read_all(server, contents)
    states = status_lines(server)
    assert sorted(s.split()[0] for s in states.values()) == ["current", "retired", "retired"]


def test_rotate_without_encryption_is_refused_in_one_line(make_server: Any) -> None:
    server = make_server("plain")
    result = server.cli("keys", "rotate", "--grace", "0", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "encryption" in lines[0] and "not configured" in lines[0], lines[0]
    status = server.cli("keys", "status")
    assert "encryption at rest: off" in status.stdout


def test_generate_writes_a_private_key_and_never_overwrites(
    make_server: Any, tmp_path: Path
) -> None:
    server = encrypted_server(make_server, tmp_path)
    out = tmp_path / "new.key"
    made = server.cli("keys", "generate", "--out", str(out))
    key = out.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", key), key
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert key not in made.stdout + made.stderr  # shown nowhere but in the file

    again = server.cli("keys", "generate", "--out", str(out), check=False)
    assert again.returncode != 0
    assert "exists" in again.stderr and "Traceback" not in again.stderr
    assert out.read_text().strip() == key  # untouched
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    printed = server.cli("keys", "generate", "--stdout")
    other = printed.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", other), printed.stdout
    assert other != key and other not in printed.stderr

    for args in ((), ("--stdout", "--out", str(tmp_path / "x.key"))):
        wrong = server.cli("keys", "generate", *args, check=False)
        assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    assert not (tmp_path / "x.key").exists()

    # Neither key in a log: the server's, the audit trail, anything in the data dir.
    server.stop()
    dump = server.cli("audit", "query", "--format", "json").stdout
    assert key not in dump and other not in dump
    places = [server.log_path, *(p for p in server.data_dir.rglob("*") if p.is_file())]
    for place in places:
        text = place.read_bytes()
        for secret in (key, other):
            assert secret.encode() not in text, place
            assert bytes.fromhex(secret) not in text, place
