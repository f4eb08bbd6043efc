"""Retention: files deleted a set time after the server recorded their upload, exactly once.

- ``davbox expiry run --now`` rehearses the future: nothing before the time,
  the file after it, each deletion one ``expiry-delete`` audit record naming
  the rule; a second run changes nothing; uncovered mailboxes are untouched.
- The clock is the server's upload record: a replaced file starts again, a
  moved file keeps its time, a file that appeared without an upload counts
  from when the job first saw it.
- Two job processes at once (SQLite, and PostgreSQL) delete every due file
  once, with one record each.
- A run that died after recording a deletion is finished by the next without
  a second record.
- A download in progress when its file expires is served whole; the next
  request gets 404.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from sqlalchemy import select, update

from davbox.db import Database
from davbox.db.models import FileRecord, Mailbox
from tests.davserver import PASSWORD, DavboxServer

POLICIES = """
policies:
  - name: transfer-5-days
    type: retention
    mailboxes: ["transfer*"]
    delete_after: 5d
  - name: transfer-tmp-1-hour
    type: retention
    mailboxes: ["transfer"]
    paths: ["/tmp/*"]
    delete_after: 1h
  - name: warned-2-days
    type: retention
    mailboxes: ["warned*"]
    delete_after: 2d
    warn_before: 1d
"""
AUTH = ("alice", PASSWORD)


def start(tmp_path: Path, name: str = "srv", extra: str = "") -> DavboxServer:
    config = tmp_path / f"{name}.yaml"
    config.write_text("expiry:\n  enabled: false\n" + extra + POLICIES)
    server = DavboxServer(tmp_path / name, config=config).start()
    server.cli("user", "add", "alice", "--password-stdin", input=PASSWORD + "\n")
    for box in ("transfer", "keep"):
        server.cli("mailbox", "create", box)
        server.cli("mailbox", "grant", box, "alice", "member")
    return server


def put(server: DavboxServer, path: str, data: bytes = b"data") -> None:
    assert requests.put(server.dav(path), data=data, auth=AUTH, timeout=10).status_code in (
        201,
        204,
    )


def status(server: DavboxServer, path: str) -> int:
    return requests.get(server.dav(path), auth=AUTH, timeout=10).status_code


def run(server: DavboxServer, now: datetime, *more: str) -> list[str]:
    out = server.cli("expiry", "run", "--now", now.strftime("%Y-%m-%dT%H:%M:%S"), *more).stdout
    return out.splitlines()


def expiry_records(server: DavboxServer) -> list[dict[str, Any]]:
    out = server.cli("audit", "query", "--event", "expiry-delete", "--format", "json").stdout
    return list(json.loads(out))


def age(db: Database, mailbox: str, path: str, days: float) -> None:
    """Pretend the server recorded the upload ``days`` ago."""
    with db.session() as session:
        box = session.execute(select(Mailbox.id).where(Mailbox.name == mailbox)).scalar_one()
        moved = session.execute(
            update(FileRecord)
            .where(FileRecord.mailbox_id == box, FileRecord.path == path)
            .values(uploaded_at=(datetime.now(UTC) - timedelta(days=days)).timestamp())
        )
        assert moved.rowcount == 1  # type: ignore[attr-defined]


def test_files_go_when_their_retention_runs_out_and_only_then(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        now = datetime.now(UTC)
        put(server, "transfer/report.pdf")
        mkcol = requests.request("MKCOL", server.dav("transfer/tmp"), auth=AUTH, timeout=10)
        assert mkcol.status_code == 201
        put(server, "transfer/tmp/scratch.txt")
        put(server, "keep/report.pdf")

        assert run(server, now + timedelta(minutes=59), "--dry-run")[-1] == "0 file(s) due"
        hour = run(server, now + timedelta(minutes=61))
        assert (
            hour[-1] == "1 file(s) deleted"
            and "transfer/tmp/scratch.txt\ttransfer-tmp-1-hour" in hour[0]
        )
        assert status(server, "transfer/tmp/scratch.txt") == 404
        assert run(server, now + timedelta(days=4, hours=23))[-1] == "0 file(s) deleted"
        assert status(server, "transfer/report.pdf") == 200

        later = now + timedelta(days=5, minutes=1)
        listed = run(server, later, "--dry-run")
        assert (
            listed[-1] == "1 file(s) due"
            and "\ttransfer/report.pdf\ttransfer-5-days\t" in listed[0]
        )
        assert status(server, "transfer/report.pdf") == 200  # a dry run deletes nothing
        assert run(server, later)[-1] == "1 file(s) deleted"
        assert run(server, later)[-1] == "0 file(s) deleted"  # again: nothing more
        assert status(server, "transfer/report.pdf") == 404
        assert status(server, "keep/report.pdf") == 200  # no rule covers it

        records = expiry_records(server)
        assert [(r["path"], r["rule"], r["actor"]) for r in records] == [
            ("/tmp/scratch.txt", "transfer-tmp-1-hour", "system"),
            ("/report.pdf", "transfer-5-days", "system"),
        ]
        assert records[1]["uploaded_at"].startswith(now.strftime("%Y-%m-%dT%H:"))
        assert server.cli("audit", "verify").returncode == 0
    finally:
        server.stop()


def test_the_clock_is_the_servers_upload_record(tmp_path: Path) -> None:
    server = start(tmp_path)
    db = server.database()
    try:
        put(server, "transfer/replaced.txt")
        age(db, "transfer", "/replaced.txt", 10)
        put(server, "transfer/replaced.txt", b"new version")  # a new placement: starts again
        put(server, "transfer/moved.txt")
        age(db, "transfer", "/moved.txt", 10)
        moved = requests.request(
            "MOVE",
            server.dav("transfer/moved.txt"),
            auth=AUTH,
            headers={"Destination": server.dav("transfer/elsewhere.txt")},
            timeout=10,
        )
        assert moved.status_code == 201
        box = server.storage_dir("transfer")
        (box / "dropped-in.txt").write_bytes(b"placed on the disk, not uploaded")

        now = datetime.now(UTC)
        first = run(server, now + timedelta(days=1))
        assert first[-1] == "1 file(s) deleted" and "transfer/elsewhere.txt" in first[0]
        assert status(server, "transfer/replaced.txt") == 200
        # First seen by that run (at its --now): due five days after it, not before.
        assert run(server, now + timedelta(days=5, hours=12))[-1] == "1 file(s) deleted"
        assert status(server, "transfer/replaced.txt") == 404
        assert (box / "dropped-in.txt").exists()
        assert run(server, now + timedelta(days=6, minutes=1))[-1] == "1 file(s) deleted"
        assert not (box / "dropped-in.txt").exists()
    finally:
        server.stop()


def test_a_download_in_progress_is_served_whole(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        data = bytes(range(256)) * 40_000  # 10 MB
        put(server, "transfer/big.bin", data)
        answer = requests.get(server.dav("transfer/big.bin"), auth=AUTH, stream=True, timeout=30)
        chunks = answer.iter_content(65536)
        received = next(chunks)
        assert run(server, datetime.now(UTC) + timedelta(days=6))[-1] == "1 file(s) deleted"
        received += b"".join(chunks)
        assert received == data
        assert status(server, "transfer/big.bin") == 404
    finally:
        server.stop()


JOB = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from davbox.app import Runtime
from davbox.config import load_settings
settings = load_settings(Path(sys.argv[2]))
runtime = Runtime.create(settings, Path(sys.argv[1]))
done = runtime.expiry_job().run(datetime.now(UTC) + timedelta(days=6))
print(" ".join(item.path for item in done))
"""


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_processes_delete_each_file_once(tmp_path: Path, database: str) -> None:
    schema = ""
    extra = ""
    if database == "postgresql":
        schema = f"davbox_expiry_{tmp_path.name[-8:].replace('-', '_')}"
        with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            c.execute(f"CREATE SCHEMA {schema}")
        extra = (
            "database:\n  url: postgresql+psycopg://postgres@127.0.0.1:5432/test"
            f"?options=-csearch_path%3D{schema}\n"
        )
    server = start(tmp_path, extra=extra)
    try:
        for i in range(40):
            put(server, f"transfer/f{i:02}.txt")
        config = tmp_path / "srv.yaml"
        jobs = [
            subprocess.Popen(
                [sys.executable, "-c", JOB, str(server.data_dir), str(config)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        deleted: list[str] = []
        for job in jobs:
            out, _ = job.communicate(timeout=120)
            assert job.returncode == 0
            deleted += out.split()
        assert sorted(deleted) == [f"/f{i:02}.txt" for i in range(40)]  # each once
        assert sorted(r["path"] for r in expiry_records(server)) == sorted(deleted)
        left = [p for p in (server.data_dir / "storage" / "mailboxes").rglob("*") if p.is_file()]
        assert left == []
    finally:
        server.stop()
        if schema:
            with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as c:
                c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_run_that_died_after_recording_is_finished_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from davbox.app import Runtime
    from davbox.config import load_settings

    server = start(tmp_path)
    put(server, "transfer/half.txt")
    server.stop()
    settings = load_settings(tmp_path / "srv.yaml")
    runtime = Runtime.create(settings, server.data_dir)
    later = datetime.now(UTC) + timedelta(days=6)

    def crash(self: Path, missing_ok: bool = False) -> None:
        raise KeyboardInterrupt("killed between the record and the unlink")

    monkeypatch.setattr(Path, "unlink", crash)
    with pytest.raises(KeyboardInterrupt):
        runtime.expiry_job().run(later)
    monkeypatch.undo()
    assert server.storage_dir("transfer").joinpath("half.txt").exists()
    # Within the claim's lease nobody else touches it; after it, the next run finishes.
    assert runtime.expiry_job().run(later) == []
    job = runtime.expiry_job()
    done = job.run(later + timedelta(seconds=job.lease + 1))
    assert [d.path for d in done] == ["/half.txt"]
    assert not server.storage_dir("transfer").joinpath("half.txt").exists()
    assert runtime.audit is not None
    records = list(runtime.audit.query(kinds=("expiry-delete",)))
    assert [r["path"] for r in records] == ["/half.txt"]  # recorded once


PROPPATCH = (
    '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:B="urn:davbox">'
    "<D:set><D:prop><B:available-until>{}</B:available-until></D:prop></D:set>"
    "</D:propertyupdate>"
)
PROPFIND = (
    '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:B="urn:davbox">'
    "<D:prop><B:available-until/></D:prop></D:propfind>"
)


def proppatch(server: DavboxServer, path: str, value: str) -> str:
    answer = requests.request(
        "PROPPATCH", server.dav(path), data=PROPPATCH.format(value), auth=AUTH, timeout=10
    )
    assert answer.status_code == 207, answer.text
    return answer.text


def test_an_uploader_can_set_a_files_end_but_not_extend_a_rule(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        now = datetime.now(UTC)
        for path in ("transfer/short.txt", "transfer/long.txt", "keep/own.txt", "keep/plain.txt"):
            put(server, path)

        day = (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert "HTTP/1.1 200" in proppatch(server, "transfer/short.txt", day)
        found = requests.request(
            "PROPFIND", server.dav("transfer/short.txt"), data=PROPFIND, auth=AUTH,
            headers={"Depth": "0"}, timeout=10,
        )  # fmt: skip
        assert found.status_code == 207 and f">{day}<" in found.text
        allprop = requests.request(
            "PROPFIND", server.dav("transfer/short.txt"), auth=AUTH, headers={"Depth": "0"},
            timeout=10,
        )  # fmt: skip
        assert "available-until" not in allprop.text  # asked for by name only
        past = proppatch(server, "transfer/short.txt", "2020-01-01T00:00:00Z")
        assert "HTTP/1.1 409" in past and "that time has passed already" in past
        bad = proppatch(server, "transfer/short.txt", "tomorrow")
        assert "HTTP/1.1 409" in bad and "cannot read" in bad
        ten_days = (now + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert "HTTP/1.1 200" in proppatch(server, "transfer/long.txt", ten_days)
        out = server.cli("expiry", "set", "keep/own.txt", "--in", "2d").stdout
        assert out.startswith("keep/own.txt goes at ")
        refused = server.cli("expiry", "set", "keep/none.txt", "--in", "2d", check=False)
        assert refused.returncode == 1 and "no file /none.txt" in refused.stderr

        first = run(server, now + timedelta(days=1, minutes=1))
        assert first[-1] == "1 file(s) deleted"
        assert "transfer/short.txt\tavailable-until\t" in first[0]
        second = run(server, now + timedelta(days=2, minutes=1))
        assert second[-1] == "1 file(s) deleted" and "keep/own.txt\tavailable-until" in second[0]
        # Ten days asked, five allowed by the rule: the rule wins.
        third = run(server, now + timedelta(days=5, minutes=1))
        assert third[-1] == "1 file(s) deleted" and "transfer/long.txt\ttransfer-5-days" in third[0]
        assert status(server, "keep/plain.txt") == 200
        rules = [(r["path"], r["rule"]) for r in expiry_records(server)]
        assert rules == [
            ("/short.txt", "available-until"),
            ("/own.txt", "available-until"),
            ("/long.txt", "transfer-5-days"),
        ]
    finally:
        server.stop()


def test_a_new_upload_clears_the_files_own_end(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        now = datetime.now(UTC)
        put(server, "keep/again.txt")
        server.cli("expiry", "set", "keep/again.txt", "--in", "1d")
        put(server, "keep/again.txt", b"second version")
        assert run(server, now + timedelta(days=3))[-1] == "0 file(s) deleted"
        assert status(server, "keep/again.txt") == 200
    finally:
        server.stop()


def test_housekeeping_removes_what_is_stale_and_only_that(tmp_path: Path) -> None:
    import os
    import socket
    import time

    from davbox.db.models import AppPassword, AuthFailure, LinkCode, OutboxMail, WebSession
    from tests.test_web_login import WebClient

    server = start(tmp_path)
    db = server.database()
    try:
        now = time.time()
        assert WebClient(server).log_in("alice").status_code == 303  # one web session
        made_app = server.cli("app-password", "create", "alice", "--label", "sync").stdout
        app_secret = made_app.rsplit(" ", 1)[1].strip()
        dav = requests.request(
            "PROPFIND", server.dav("keep/"), auth=("alice", app_secret),
            headers={"Depth": "0"}, timeout=10,
        )  # fmt: skip
        assert dav.status_code == 207  # used once: its address is recorded
        put(server, "keep/shared.txt")
        made = server.cli("share", "create", "keep/shared.txt", "--permission", "read").stdout
        link_id = int(made.split("link ")[1].split()[0])
        with db.session() as session:
            session.add(AuthFailure(key="user:alice", at=now - 60))
            session.add(
                LinkCode(link_id=link_id, digest="0" * 64, created_at=now, expires_at=now + 600,
                         attempts=0, used=False)
            )  # fmt: skip
            session.add(
                OutboxMail(recipient="a@example.org", template="test", language="en",
                           subject="s", text="", message_id="<m@x>", state="sent", attempts=1,
                           created_at=now, next_attempt_at=now, sent_at=now, last_error="")
            )  # fmt: skip
        temp = server.data_dir / "storage" / "tmp" / f"{socket.gethostname()}.{os.getpid()}.x.put"
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(b"half an upload")

        def sweep(at: float) -> dict[str, int]:
            moment = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            out = server.cli("expiry", "housekeeping", "--now", moment).stdout
            return {line.split("\t")[0]: int(line.split("\t")[1]) for line in out.splitlines()}

        assert sweep(now) == {
            "unfinished uploads": 0, "web sessions": 0, "login failures": 0,
            "link codes": 0, "sent mails": 0, "app-password addresses": 0, "audit records": 0,
        }  # fmt: skip
        assert sweep(now + 2 * 86400) == {
            "unfinished uploads": 1, "web sessions": 1, "login failures": 1,
            "link codes": 1, "sent mails": 0, "app-password addresses": 0, "audit records": 0,
        }  # fmt: skip
        assert not temp.exists()
        assert sweep(now + 31 * 86400)["sent mails"] == 1
        assert set(sweep(now + 31 * 86400).values()) == {0}  # again: nothing more
        assert sweep(now + 91 * 86400)["app-password addresses"] == 1
        with db.session() as session:
            used = session.query(AppPassword).filter_by(label="sync").one()
            assert used.last_used_from is None and used.last_used_at is not None
            assert (
                session.query(AppPassword).filter(AppPassword.last_used_from.is_not(None)).count()
                == 0
            )
        with db.session() as session:
            assert session.query(WebSession).count() == 0
        assert status(server, "keep/shared.txt") == 200  # files are the expiry job's, not this
    finally:
        server.stop()


def test_uploaders_and_managers_are_warned_once_before_files_go(tmp_path: Path) -> None:
    import time

    from davbox import accounts
    from tests.smtpd import SmtpServer

    smtp = SmtpServer().start()
    mail = (
        f"mail:\n  host: 127.0.0.1\n  port: {smtp.port}\n  security: none\n"
        "  from_address: davbox@example.org\n  poll_interval: 0.2\n"
    )
    server = start(tmp_path, extra=mail)
    try:
        db = server.database()
        accounts.add_user(db, "bea", PASSWORD, email="bea@example.org", display_name="Bea")
        accounts.add_user(db, "max", PASSWORD, email="max@example.org", display_name="Max")
        accounts.add_user(db, "ron", PASSWORD, email="ron@example.org")  # a reader: not told
        for box in ("warned", "warned-secret"):
            server.cli("mailbox", "create", box)
            server.cli("mailbox", "grant", box, "bea", "dropper")
            server.cli("mailbox", "grant", box, "max", "manager")
            server.cli("mailbox", "grant", box, "ron", "reader")
        server.cli("mailbox", "set", "warned-secret", "--sensitive")
        now = datetime.now(UTC)
        for box in ("warned", "warned-secret"):
            answer = requests.put(
                server.dav(f"{box}/jaarverslag.pdf"), data=b"x", auth=("bea", PASSWORD), timeout=10
            )
            assert answer.status_code == 201
        assert run(server, now + timedelta(hours=23))[-1] == "0 file(s) deleted"
        assert run(server, now + timedelta(hours=25))[-1] == "0 file(s) deleted"
        assert run(server, now + timedelta(hours=26))[-1] == "0 file(s) deleted"  # again
        received = smtp.wait_for(4)
        assert sorted(m.envelope_to[0] for m in received) == [
            "bea@example.org", "bea@example.org", "max@example.org", "max@example.org",
        ]  # fmt: skip
        plain = [m for m in received if "jaarverslag" in m.subject]
        assert len(plain) == 2  # the sensitive mailbox's two name no file
        for message in plain:
            assert message.subject.startswith("Wordt verwijderd op ")
        bea = next(m for m in plain if m.envelope_to == ["bea@example.org"])
        maxs = next(m for m in plain if m.envelope_to == ["max@example.org"])
        assert "dat u hebt geplaatst in postbus warned" in bea.text
        assert "Het bestand in postbus warned" in maxs.text
        assert all("jaarverslag" not in m.text for m in received if m not in plain)
        assert run(server, now + timedelta(days=2, minutes=1))[-1] == "2 file(s) deleted"
        time.sleep(1.0)
        assert len(smtp.messages) == 4  # one warning per person and file, however often it ran
    finally:
        server.stop()
        smtp.stop()


def test_a_link_stops_exactly_at_its_expiry(tmp_path: Path) -> None:
    from davbox import links
    from davbox.accounts import create_mailbox

    db = Database(f"sqlite:///{tmp_path / 'l.db'}")
    db.upgrade()
    create_mailbox(db, "box")
    made = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    end = made + timedelta(hours=1)
    link, token = links.create(
        db, mailbox="box", path="/", is_folder=True, permission="read", expires_at=end, now=made
    )
    assert links.find(db, token, now=end - timedelta(microseconds=1)) is not None
    assert links.find(db, token, now=end) is None  # at its expiry, not a job run later
    assert links.get(db, link.id).state(end) == "expired"
    db.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_one_process_runs_the_job_each_period(tmp_path: Path, database: str) -> None:
    from davbox.expiry import ExpiryScheduler
    from davbox.jobs import JobLeases

    url = f"sqlite:///{tmp_path / 'j.db'}"
    schema = ""
    if database == "postgresql":
        schema = f"davbox_jobs_{tmp_path.name[-8:].replace('-', '_')}"
        with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            c.execute(f"CREATE SCHEMA {schema}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    try:
        first, second = Database(url), Database(url)  # two processes' engines
        first.upgrade()
        a, b = JobLeases(first), JobLeases(second)
        assert a.acquire("expiry", 270, now=1000.0)
        assert not b.acquire("expiry", 270, now=1001.0)  # this period is a's
        assert not a.acquire("expiry", 270, now=1200.0)
        assert b.acquire("expiry", 270, now=1270.0)  # the next period: whoever comes first
        assert b.acquire("other", 270, now=1270.0)  # leases are per job

        class Job:
            runs = 0

            def run(self) -> list[object]:
                Job.runs += 1
                return []

        schedulers = [
            ExpiryScheduler(Job(), 300, leases=JobLeases(db))  # type: ignore[arg-type]
            for db in (first, second)
        ]
        assert [s._run() for s in schedulers] == [True, False]
        assert Job.runs == 1
        first.dispose()
        second.dispose()
    finally:
        if schema:
            with psycopg.connect("host=127.0.0.1 dbname=test user=postgres", autocommit=True) as c:
                c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
