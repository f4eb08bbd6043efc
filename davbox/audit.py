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
import collections
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
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
    first: int = 1  # the first record's number (above 1 after old records were trimmed)


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
        """Walk the chain from its first record (or the trim anchor); the first problem found."""
        with self.db.engine.connect() as conn:
            head = conn.execute(
                select(
                    AuditHead.seq,
                    AuditHead.hash,
                    AuditHead.anchor_seq,
                    AuditHead.anchor_hash,
                    AuditHead.anchor_seal,
                ).where(AuditHead.id == HEAD_ID)
            ).first()
            first, prev = 1, GENESIS
            if head is not None and head.anchor_seq:
                if not hmac.compare_digest(
                    self._anchor_seal(head.anchor_seq, head.anchor_hash or ""),
                    head.anchor_seal or "",
                ):
                    text = "its trim anchor (where the chain starts) is not sealed by this server"
                    return Verdict(0, Problem(None, text), GENESIS)
                first, prev = head.anchor_seq + 1, head.anchor_hash or ""
            expected, count = first, 0
            rows = conn.execution_options(yield_per=500).execute(
                select(AuditRecord).order_by(AuditRecord.seq)
            )
            for row in rows:
                problem = self._check(row, expected, prev)
                if problem is not None:
                    return Verdict(count, problem, prev, first)
                expected, prev, count = expected + 1, row.hash, count + 1
        if head is None:
            return Verdict(count, Problem(None, "the chain head row is missing"), prev, first)
        last = expected - 1
        if head.seq != last or head.hash != prev:
            if head.seq > last:
                text = f"records {last + 1} to {head.seq} were removed from the end"
            else:
                text = f"it names record {head.seq} as the last, but the chain goes on to {last}"
            return Verdict(count, Problem(None, text), prev, first)
        return Verdict(count, None, prev, first)

    def _anchor_seal(self, seq: int, digest: str) -> str:
        return hmac.new(self.key, f"anchor\n{seq}\n{digest}".encode(), hashlib.sha256).hexdigest()

    def trim(self, before: datetime) -> tuple[int, int]:
        """Remove the records older than ``before``; return (how many, the new anchor's number).

        In one transaction under the chain head's lock: the records up to the
        newest one older than ``before`` go, and the head keeps that record's
        number and hash as the chain's sealed starting point, so ``verify``
        still checks every record that is left (and notices any removed
        without moving the anchor). Raises ``AuditUnavailable``.
        """
        try:
            with self.db.engine.begin() as conn:
                conn.execute(
                    update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=AuditHead.seq)
                )
                last = conn.execute(
                    select(func.max(AuditRecord.seq)).where(AuditRecord.at < before)
                ).scalar()
                if last is None:
                    return 0, 0
                digest = conn.execute(
                    select(AuditRecord.hash).where(AuditRecord.seq == last)
                ).scalar_one()
                removed = conn.execute(delete(AuditRecord).where(AuditRecord.seq <= last))
                conn.execute(
                    update(AuditHead)
                    .where(AuditHead.id == HEAD_ID)
                    .values(
                        anchor_seq=last,
                        anchor_hash=digest,
                        anchor_seal=self._anchor_seal(last, digest),
                    )
                )
                return int(removed.rowcount), int(last)  # type: ignore[attr-defined]
        except SQLAlchemyError as exc:
            raise AuditUnavailable(f"the audit trail cannot be trimmed: {_short(exc)}") from exc

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
    downloads, whose bytes are sent — are not written by the request's
    thread: they wait in memory and a writer thread seals what gathered
    within ``LINGER`` seconds in one transaction, so a download does not wait
    for its record and many downloads share one commit. Every other event is
    written before ``handle`` returns, in one transaction with the downloads
    still waiting before it: the chain keeps the order in which things
    happened in this process (a file fetched and then moved has its download
    record before its move record). A failed write keeps the waiting records
    and is retried every second (meanwhile ``check_writable`` refuses new
    downloads); at exit they are written out (``close``, via ``atexit``).
    """

    AFTER_THE_FACT = frozenset({"download", "link-downloaded"})
    LINGER = 0.025  # seconds the writer lets records gather after the first

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._waiting: collections.deque[Event] = collections.deque()  # appends are atomic
        self._write_lock = threading.Lock()  # one writer of waiting records at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def handle(self, event: Event) -> None:
        if event.kind in self.AFTER_THE_FACT:
            self._start()
            self._waiting.append(event)
            self._wake.set()
        else:
            with self._write_lock:
                waiting = self._take()
                try:
                    self.store.append_many([*waiting, event])
                except AuditUnavailable:
                    self._waiting.extendleft(reversed(waiting))
                    raise

    def _take(self) -> list[Event]:
        taken: list[Event] = []
        while True:
            try:
                taken.append(self._waiting.popleft())
            except IndexError:
                return taken

    def _start(self) -> None:
        if self._writer is None:
            with self._start_lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write, name="audit-writer", daemon=True
                    )
                    self._writer.start()
                    atexit.register(self.close)

    def _write(self) -> None:
        while True:
            self._wake.wait()
            self._stop.wait(self.LINGER)  # cut short by close()
            self._wake.clear()
            if self._flush():
                if self._stop.is_set():
                    return
            elif self._stop.wait(1):  # logged by the store; retried until it takes them
                return  # closing: what the store will not take is lost with the process
            else:
                self._wake.set()

    def _flush(self) -> bool:
        """Seal the waiting records; False (and they wait on) if the store refused."""
        with self._write_lock:
            waiting = self._take()
            if not waiting:
                return True
            try:
                self.store.append_many(waiting)
            except AuditUnavailable:
                self._waiting.extendleft(reversed(waiting))
                return False
            return True

    def close(self, timeout: float = 10) -> None:
        """Write out what is waiting, then stop the writer."""
        writer = self._writer
        if writer is not None and writer.is_alive():
            self._stop.set()
            self._wake.set()
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
