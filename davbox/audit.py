"""The audit trail: every event sealed into an append-only, tamper-evident SQL chain.

Contract:
- ``AuditStore.append(event)`` writes one record in one transaction: it first
  bumps the chain head (``audit_head``, one row), which serializes appends of
  every thread and process (the row lock on PostgreSQL, the database write
  lock on SQLite), then reads the previous hash from it, inserts the record
  and stores the new hash in the head. The chain therefore never forks.
- A record is the event's canonical JSON (sorted keys, no spaces, UTF-8, UTC
  time with microseconds) plus its sequence number, the previous record's hash
  and its own hash = HMAC-SHA256(key, "<seq>\\n<prev_hash>\\n<record>"). The key
  is derived from the installation secret (``Database.server_secret``): a
  forger who can write the audit tables but not read the secret cannot make
  a consistent chain. Someone who can read the whole database can (the
  secret lives there too); against them, copy ``audit verify``'s last hash
  somewhere else now and then. Removing records from the very end and
  rewinding the head to match cannot be told from a shorter history without
  such a copy.
- ``verify()`` walks the whole chain and returns the first problem: a record
  whose contents do not match its hash (edited), whose query columns differ
  from its sealed JSON, whose number is not the next one (removed, inserted
  or reordered), that does not follow the previous record's hash, or a head
  that does not match the last record (records removed from or added after
  the end).
- Failures raise ``AuditUnavailable``; ``AuditSink`` (an ``EventBus`` sink)
  lets it through, so the operation that emitted the event is refused (fail
  closed). Finished downloads are sealed by a writer thread in batches (see
  ``AuditSink``). ``check_writable()`` refuses while the last write failed
  (then it probes with an insert it rolls back): callers ask it before
  something that cannot be undone later (a download).
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from davbox.db import Database
from davbox.db.models import AuditHead, AuditRecord
from davbox.events import Event

GENESIS = "0" * 64
HEAD_ID = 1
# Columns copied out of the sealed JSON for queries (checked by verify).
COLUMNS = ("kind", "request_id", "actor", "mailbox", "path", "status")
_log = logging.getLogger("davbox.audit")


class AuditUnavailable(Exception):
    """The audit record could not be written: the operation must be refused."""


def canonical(event: Event) -> dict[str, Any]:
    """The event as the plain values that are sealed (``kind`` and UTC ``time`` included)."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in event.fields().items()}
    values["kind"] = event.kind
    values["time"] = event.time.astimezone(UTC).isoformat(timespec="microseconds")
    return values


def dumps(values: dict[str, Any]) -> str:
    return json.dumps(
        values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def seal(key: bytes, seq: int, prev_hash: str, record: str) -> str:
    message = f"{seq}\n{prev_hash}\n{record}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Problem:
    """Where the chain breaks: the record's number (or the head) and what is wrong."""

    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"record {self.seq}" if self.seq is not None else "chain head"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Verdict:
    records: int
    problem: Problem | None
    last_hash: str


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.key = hmac.new(db.server_secret(), b"davbox audit chain", hashlib.sha256).digest()
        # False after a failed write: until a probe succeeds, nothing starts that
        # would need a record (None: not known yet, probe once).
        self._healthy: bool | None = None

    # -- writing ---------------------------------------------------------------

    def append(self, event: Event) -> int:
        """Seal ``event`` as the next record; return its number. Raise ``AuditUnavailable``."""
        return self.append_many([event])

    def append_many(self, events: list[Event]) -> int:
        """Seal ``events`` as the next records in one transaction; return the last number."""
        records = [(event, canonical(event)) for event in events]
        try:
            with self.db.engine.begin() as conn:
                bumped = conn.execute(
                    update(AuditHead)
                    .where(AuditHead.id == HEAD_ID)
                    .values(seq=AuditHead.seq + len(records))
                )
                if bumped.rowcount != 1:
                    raise AuditUnavailable("the audit chain head is missing")
                last, prev = conn.execute(
                    select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
                ).one()
                rows = []
                for seq, (event, values) in enumerate(records, start=last - len(records) + 1):
                    record = dumps(values)
                    digest = seal(self.key, seq, prev, record)
                    rows.append(
                        {
                            "seq": seq,
                            "at": event.time.astimezone(UTC),
                            "record": record,
                            "prev_hash": prev,
                            "hash": digest,
                            **_columns(values),
                        }
                    )
                    prev = digest
                conn.execute(insert(AuditRecord), rows)
                conn.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(hash=prev))
        except SQLAlchemyError as exc:
            self._healthy = False
            kinds = ",".join(sorted({event.kind for event in events}))
            _log.error("audit record not written (%s): %s", kinds, exc)
            raise AuditUnavailable(f"the audit trail cannot be written: {_short(exc)}") from exc
        self._healthy = True
        return int(last)

    def check_writable(self) -> None:
        """Raise ``AuditUnavailable`` if the store is known to be unwritable.

        After the last write succeeded this costs nothing; after a failed write
        (or before the first) it tries a record insert and rolls it back, so a
        store that failed stays closed until it takes records again.
        """
        if self._healthy:
            return
        try:
            with self.db.engine.connect() as conn:
                transaction = conn.begin()
                try:
                    conn.execute(
                        insert(AuditRecord).values(
                            seq=-1,
                            at=datetime.now(UTC),
                            record="{}",
                            prev_hash=GENESIS,
                            hash=GENESIS,
                            kind="probe",
                            request_id="",
                            actor="",
                            mailbox="",
                            path="",
                            status=None,
                        )
                    )
                finally:
                    transaction.rollback()
            self._healthy = True
        except SQLAlchemyError as exc:
            self._healthy = False
            _log.error("audit trail not writable: %s", exc)
            raise AuditUnavailable(f"the audit trail cannot be written: {_short(exc)}") from exc

    # -- reading ---------------------------------------------------------------

    def verify(self) -> Verdict:
        """Walk the chain from the first record; the first problem found, if any."""
        expected, prev, count = 1, GENESIS, 0
        with self.db.engine.connect() as conn:
            head = conn.execute(
                select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID)
            ).first()
            rows = conn.execution_options(yield_per=500).execute(
                select(AuditRecord).order_by(AuditRecord.seq)
            )
            for row in rows:
                problem = self._check(row, expected, prev)
                if problem is not None:
                    return Verdict(count, problem, prev)
                expected, prev, count = expected + 1, row.hash, count + 1
        if head is None:
            return Verdict(count, Problem(None, "the chain head row is missing"), prev)
        if head.seq != count or head.hash != prev:
            if head.seq > count:
                text = f"records {count + 1} to {head.seq} were removed from the end"
            else:
                text = f"it names record {head.seq} as the last, but the chain goes on to {count}"
            return Verdict(count, Problem(None, text), prev)
        return Verdict(count, None, prev)

    def _check(self, row: Any, expected: int, prev: str) -> Problem | None:
        seq = row.seq
        if seq != expected:
            if seq > expected:
                gone = f"{expected}" if seq == expected + 1 else f"{expected} to {seq - 1}"
                return Problem(expected, f"missing: record {gone} was removed (next is {seq})")
            return Problem(seq, f"out of place: record {seq} appears where {expected} belongs")
        if not hmac.compare_digest(seal(self.key, seq, row.prev_hash, row.record), row.hash):
            return Problem(seq, "changed: its contents do not match its seal")
        if row.prev_hash != prev:
            return Problem(
                seq, "out of chain: it does not follow the record before it (reordered or inserted)"
            )
        try:
            values = json.loads(row.record)
        except ValueError:
            return Problem(seq, "its sealed record is not valid JSON")
        stored = {c: getattr(row, c) for c in COLUMNS}
        for column, value in _columns(values).items():
            if stored[column] != value:
                return Problem(seq, f"changed: column {column!r} differs from the sealed record")
        if _as_utc(row.at).isoformat(timespec="microseconds") != values.get("time"):
            return Problem(seq, "changed: column 'at' differs from the sealed record")
        return None

    def query(
        self,
        *,
        mailbox: str | None = None,
        path: str | None = None,
        actor: str | None = None,
        kinds: tuple[str, ...] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        request_id: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records matching every filter given, oldest first, as their sealed values + ``seq``.

        ``path`` matches exactly, or everything below it when it ends with "/".
        """
        statement = select(AuditRecord.seq, AuditRecord.record).order_by(AuditRecord.seq)
        if mailbox is not None:
            statement = statement.where(AuditRecord.mailbox == mailbox)
        if path is not None:
            if path.endswith("/") and path != "/":
                statement = statement.where(
                    or_(AuditRecord.path == path.rstrip("/"), AuditRecord.path.startswith(path))
                )
            else:
                statement = statement.where(AuditRecord.path == path)
        if actor is not None:
            statement = statement.where(AuditRecord.actor == actor)
        if kinds:
            statement = statement.where(AuditRecord.kind.in_(kinds))
        if since is not None:
            statement = statement.where(AuditRecord.at >= since)
        if until is not None:
            statement = statement.where(AuditRecord.at < until)
        if request_id is not None:
            statement = statement.where(AuditRecord.request_id == request_id)
        with self.db.engine.connect() as conn:
            for seq, record in conn.execution_options(yield_per=500).execute(statement):
                yield {"seq": seq, **json.loads(record)}


FILE_KINDS = ("upload", "download", "delete", "move", "copy", "link-uploaded", "link-downloaded")


def history(store: AuditStore, mailbox: str, path: str) -> list[dict[str, Any]]:
    """What happened to one file, oldest first: placed, fetched, moved, copied, deleted.

    Moves are followed backwards: records of the name a file had before it
    was moved here belong to its history too (up to that move).
    """
    names = {(mailbox, path)}
    found: list[dict[str, Any]] = []
    records = list(store.query(kinds=FILE_KINDS))
    for record in reversed(records):
        here = (record.get("mailbox", ""), record.get("path", ""))
        there = (record.get("to_mailbox", ""), record.get("to_path", ""))
        if record["kind"] == "move" and there in names:
            found.append(record)
            names.add(here)
        elif here in names or (record["kind"] == "copy" and there in names):
            found.append(record)
    return list(reversed(found))


class AuditSink:
    """The ``EventBus`` sink that seals every event; its failure fails the emit.

    Records of things already done that cannot be refused any more — finished
    downloads, whose bytes are sent — go through a writer thread that seals
    what has queued up in one transaction: a download does not wait for its
    record, and many downloads share one commit. Everything else is written
    before ``handle`` returns. A failed batch stays queued and is retried
    every second (meanwhile ``check_writable`` refuses new downloads); at
    exit the queue is written out (``close``, registered with ``atexit``).
    """

    AFTER_THE_FACT = frozenset({"download"})

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        if event.kind in self.AFTER_THE_FACT:
            self._start()
            self._queue.put(event)
        else:
            self.store.append(event)

    def _start(self) -> None:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write, name="audit-writer", daemon=True
                    )
                    self._writer.start()
                    atexit.register(self.close)

    def _write(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            batch = [first] if first is not None else []
            stop = first is None
            while len(batch) < 1000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            while batch:
                try:
                    self.store.append_many(batch)
                    batch = []
                except AuditUnavailable:
                    time.sleep(1)  # logged by the store; retried until it takes them

    def close(self, timeout: float = 10) -> None:
        """Write out what is queued, then stop the writer."""
        writer = self._writer
        if writer is not None and writer.is_alive():
            self._queue.put(None)
            writer.join(timeout)


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": values.get("kind", ""),
        "request_id": values.get("request_id", "") or "",
        "actor": values.get("actor", "") or "",
        "mailbox": values.get("mailbox", "") or "",
        "path": values.get("path", "") or "",
        "status": values.get("status"),
    }


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _short(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return text[:200]
