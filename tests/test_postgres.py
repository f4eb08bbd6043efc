"""The audit trail on PostgreSQL (127.0.0.1:5432, database ``test``), as several server
processes would share it.

- Appends from several OS processes, each with threads of its own, form one
  chain: every number once, none forked, ``verify`` intact.
- A real server on PostgreSQL records WebDAV work, and ``davbox audit verify``
  names the row that was edited, removed or inserted behind its back.

Each test gets its own schema (``search_path``), dropped at the end.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.davserver import PASSWORD, DavboxServer

PG = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@pytest.fixture
def pg_url() -> Iterator[str]:
    schema = f"davbox_{secrets.token_hex(6)}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield (
            f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
        )
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


WRITER = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from davbox.audit import AuditStore
    from davbox.db import Database
    from davbox.events import Deleted

    url, name = sys.argv[1], sys.argv[2]
    store = AuditStore(Database(url))

    def work(thread):
        return [
            store.append(Deleted(actor=f"{name}-{thread}", mailbox="m", path=f"/{i}"))
            for i in range(25)
        ]

    with ThreadPoolExecutor(4) as pool:
        numbers = [n for batch in pool.map(work, range(4)) for n in batch]
    print(" ".join(map(str, numbers)))
    """
)


def test_processes_appending_at_once_form_one_chain(pg_url: str) -> None:
    from davbox.audit import AuditStore
    from davbox.db import Database

    db = Database(pg_url)
    db.upgrade()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, pg_url, f"p{n}"], stdout=subprocess.PIPE, text=True
        )
        for n in range(3)
    ]
    numbers: list[int] = []
    for writer in writers:
        out, _ = writer.communicate(timeout=120)
        assert writer.returncode == 0
        numbers += [int(n) for n in out.split()]
    assert sorted(numbers) == list(range(1, 301))  # 3 processes x 4 threads x 25
    verdict = AuditStore(db).verify()
    assert verdict.problem is None and verdict.records == 300
    db.dispose()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param(
            "UPDATE audit_records SET record = replace(record, '\"alice\"', '\"mallory\"') "
            "WHERE seq = 2",
            "record 2: changed",
            id="edited",
        ),
        pytest.param("DELETE FROM audit_records WHERE seq = 2", "record 2: missing", id="removed"),
        pytest.param(
            "INSERT INTO audit_records (seq, at, record, prev_hash, hash, kind, request_id,"
            " actor, mailbox, path, status) SELECT 0, at, record, prev_hash, hash, kind,"
            " request_id, actor, mailbox, path, status FROM audit_records WHERE seq = 1",
            "record 0: out of place",
            id="inserted",
        ),
    ],
)
def test_a_server_on_postgres_records_and_tampering_is_named(
    pg_url: str, tmp_path: Path, sql: str, message: str
) -> None:
    config = tmp_path / "davbox.yaml"
    config.write_text(f"database:\n  url: {pg_url}\n")
    server = DavboxServer(tmp_path / "data", config=config).start()
    try:
        server.cli("user", "add", "alice", "--password-stdin", input=PASSWORD + "\n")
        server.cli("mailbox", "create", "box")
        server.cli("mailbox", "grant", "box", "alice", "member")
        auth = ("alice", PASSWORD)
        assert requests.put(server.dav("box/a.txt"), data=b"1", auth=auth, timeout=10).ok
        assert requests.get(server.dav("box/a.txt"), auth=auth, timeout=10).content == b"1"
        assert requests.delete(server.dav("box/a.txt"), auth=auth, timeout=10).ok
        intact = server.cli("audit", "verify").stdout
        assert intact.startswith("3 records, chain intact"), intact
        with psycopg.connect(PG, autocommit=True) as conn:
            schema = pg_url.rsplit("%3D", 1)[1]
            conn.execute(f"SET search_path TO {schema}")
            conn.execute(sql)  # type: ignore[arg-type]
        broken = server.cli("audit", "verify", check=False)
        assert broken.returncode == 1
        assert message in broken.stdout + broken.stderr
    finally:
        server.stop()
