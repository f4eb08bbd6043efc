"""Expiry: delete files whose retention (``retention`` policies) has run out, exactly once.

Contract:
- ``ExpiryJob.due(now)`` lists the files of every mailbox a ``retention``
  rule covers whose server-recorded upload time (``file_records``, see
  ``davbox.file_index``) plus the rule's ``delete_after`` is at or before
  ``now``, and every file whose uploader's own end of availability
  (``available_until``; it can shorten a rule's time, not extend it) has
  come (rule "available-until"). A file without a record is recorded as placed at ``now`` (first
  seen: it expires later than it might, never sooner); a dry run records
  nothing.
- ``run(now)`` deletes what is due. Each file is first claimed with one
  UPDATE (its record, its upload time unchanged, no live claim): with several
  processes or nodes on one database each file is deleted by one of them.
  Under the mailbox's commit lock the file must still be the one scanned
  (same inode and modification time: a file replaced meanwhile is a new
  placement and stays); then the ``FileExpired`` event (audit record naming
  the rule) is written, the file unlinked and its record dropped. If the
  record cannot be written nothing is deleted (fail closed). A download in
  progress keeps its open file and is served whole; later requests get 404.
- A run killed halfway leaves either a live claim (taken over once its lease
  ends; a deletion already recorded is not recorded again) or nothing.
  Running again changes nothing more.
- Files within their rule's ``warn_before`` of the end are handed to
  ``warnings`` (``ExpiryWarnings``: one mail to the uploader and to each
  manager of the mailbox per file and upload, however often the job runs or
  how many processes run it).
- ``ExpiryScheduler`` runs the job (then housekeeping) every ``interval``
  seconds in the server; with ``leases`` one process per period does
  (``davbox.jobs``).
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import delete, or_, select, update

from davbox.audit import AuditStore, AuditUnavailable
from davbox.db import Database
from davbox.db.models import FileRecord, GroupMember, Mailbox, MailboxGrant, Role, User
from davbox.events import EventBus, FileExpired
from davbox.file_index import record_seen
from davbox.housekeeping import Housekeeping
from davbox.jobs import JobLeases
from davbox.mail import Outbox
from davbox.policies.engine import PolicyEngine
from davbox.policies.retention import RetentionPolicy, retention_for
from davbox.providers.storage.filesystem import FilesystemStorage

_log = logging.getLogger("davbox.expiry")
LEASE = 600.0  # seconds a claim on a file lasts (a run that died leaves it this long)
AVAILABILITY = "available-until"  # the "rule" of a file whose uploader chose its end


@dataclass(frozen=True)
class Due:
    """A file whose time is up (or, for a dry run, would be)."""

    mailbox: str
    path: str
    rule: str
    uploaded_at: datetime
    expires_at: datetime
    size: int
    record_id: int | None
    storage_key: str
    stamp: tuple[int, int]  # inode and modification time when scanned
    recorded: float = 0.0  # the record's upload time as stored (the claim compares it)


class ExpiryJob:
    def __init__(
        self,
        db: Database,
        storage: FilesystemStorage,
        engine: PolicyEngine,
        events: EventBus,
        audit: AuditStore | None = None,
        *,
        lease: float = LEASE,
        warnings: ExpiryWarnings | None = None,
    ) -> None:
        self.warnings = warnings
        self.db = db
        self.storage = storage
        self.engine = engine
        self.events = events
        self.audit = audit
        self.lease = lease

    # -- what is due ----------------------------------------------------------------

    def due(
        self,
        now: datetime | None = None,
        *,
        record_unseen: bool = True,
        soon: list[Due] | None = None,
    ) -> list[Due]:
        """What is due at ``now``; files within their rule's ``warn_before`` go to ``soon``."""
        now = now or datetime.now(UTC)
        rules = [p for p in self.engine.policies if isinstance(p, RetentionPolicy)]
        with self.db.session() as session:
            boxes = session.execute(select(Mailbox.id, Mailbox.name, Mailbox.storage_key)).all()
        found: dict[int | None, Due] = {}
        for box_id, name, key in boxes:
            if any(rule.covers_mailbox(name) for rule in rules):
                for item in self._due_in(box_id, name, key, now, record_unseen, soon):
                    found[item.record_id] = item
        for item in self._unavailable(now):  # the uploader's own end, wherever the file is
            if item.record_id not in found:
                found[item.record_id] = item
        return sorted(found.values(), key=lambda d: (d.expires_at, d.mailbox, d.path))

    def _unavailable(self, now: datetime) -> list[Due]:
        """Files whose uploader's end of availability has come."""
        with self.db.session() as session:
            rows = session.execute(
                select(FileRecord, Mailbox.name, Mailbox.storage_key)
                .join(Mailbox, Mailbox.id == FileRecord.mailbox_id)
                .where(FileRecord.available_until <= now.timestamp())
            ).all()
        due: list[Due] = []
        for record, name, key in rows:
            fs = self.storage.mailbox_dir(key) / record.path.lstrip("/")
            try:
                st = os.lstat(fs)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            placed = datetime.fromtimestamp(record.uploaded_at, UTC)
            until = datetime.fromtimestamp(record.available_until or 0.0, UTC)
            size = self.storage.content_size(st.st_size)
            due.append(
                Due(name, record.path, AVAILABILITY, placed, until, size, record.id,
                    key, (st.st_ino, st.st_mtime_ns), record.uploaded_at)
            )  # fmt: skip
        return due

    def _due_in(
        self,
        box_id: int,
        name: str,
        key: str,
        now: datetime,
        record_unseen: bool,
        soon: list[Due] | None,
    ) -> list[Due]:
        with self.db.session() as session:
            records = {
                row.path: (row.id, row.uploaded_at, row.available_until)
                for row in session.execute(
                    select(
                        FileRecord.id,
                        FileRecord.path,
                        FileRecord.uploaded_at,
                        FileRecord.available_until,
                    ).where(FileRecord.mailbox_id == box_id)
                )
            }
        due: list[Due] = []
        top = self.storage.mailbox_dir(key)
        for rel, _fs, st in _files(top):
            retention = retention_for(self.engine.policies, name, rel)
            if retention is None:
                continue
            keep, rule = retention
            record = records.get(rel)
            if record is None:
                if record_unseen:
                    record_seen(self.db, box_id, rel, now.timestamp())
                continue  # first seen now: due only after its whole retention from now
            record_id, uploaded, own_end = record
            placed = datetime.fromtimestamp(uploaded, UTC)
            ends, why = placed + keep, rule.label
            if own_end is not None and datetime.fromtimestamp(own_end, UTC) < ends:
                ends, why = datetime.fromtimestamp(own_end, UTC), AVAILABILITY
            size = self.storage.content_size(st.st_size)
            item = Due(name, rel, why, placed, ends, size, record_id,
                       key, (st.st_ino, st.st_mtime_ns), uploaded)  # fmt: skip
            if ends <= now:
                due.append(item)
            elif soon is not None and rule.warn_before and ends - rule.warn_before <= now:
                soon.append(item)
        return due

    # -- deleting -------------------------------------------------------------------

    def run(self, now: datetime | None = None, *, dry_run: bool = False) -> list[Due]:
        """Delete (or with ``dry_run`` only list) what is due; return what was deleted."""
        now = now or datetime.now(UTC)
        soon: list[Due] = []
        found = self.due(now, record_unseen=not dry_run, soon=soon)
        if dry_run:
            return found
        if self.warnings is not None:
            self.warnings.warn(soon)
        deleted: list[Due] = []
        for item in found:
            try:
                if self._delete(item, now):
                    deleted.append(item)
            except AuditUnavailable:
                _log.error("expiry stopped: the audit trail cannot record deletions")
                break
        return deleted

    def _delete(self, item: Due, now: datetime) -> bool:
        clock = now.timestamp()
        with self.db.session() as session:
            previous = session.execute(
                select(FileRecord.claimed_until).where(FileRecord.id == item.record_id)
            ).first()
            claimed = session.execute(
                update(FileRecord)
                .where(
                    FileRecord.id == item.record_id,
                    FileRecord.uploaded_at == item.recorded,
                    or_(FileRecord.claimed_until.is_(None), FileRecord.claimed_until < clock),
                )
                .values(claimed_until=clock + self.lease)
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return False  # another run has it, or it was replaced or removed
        taken_over = previous is not None and previous[0] is not None
        fs = self.storage.mailbox_dir(item.storage_key) / item.path.lstrip("/")
        with self.storage.commit_lock(item.storage_key):
            try:
                st = os.lstat(fs)
            except FileNotFoundError:
                self._forget(item)
                return False
            if (st.st_ino, st.st_mtime_ns) != item.stamp:
                self._release(item)  # replaced since the scan: a new placement
                return False
            if not (taken_over and self._already_recorded(item)):
                try:
                    self.events.emit(
                        FileExpired(
                            actor="system",
                            actor_kind="system",
                            mailbox=item.mailbox,
                            path=item.path,
                            status=204,
                            rule=item.rule,
                            uploaded_at=item.uploaded_at.isoformat(timespec="seconds"),
                            size=item.size,
                            file_id=item.record_id or 0,
                        )
                    )
                except AuditUnavailable:
                    self._release(item)
                    raise
            self.storage.discard_file(fs)
        self.storage.usage_changed(item.storage_key)
        self._forget(item)
        return True

    def _already_recorded(self, item: Due) -> bool:
        if self.audit is None:
            return False
        return any(
            record.get("file_id") == item.record_id
            for record in self.audit.query(
                mailbox=item.mailbox, path=item.path, kinds=(FileExpired.kind,)
            )
        )

    def _forget(self, item: Due) -> None:
        with self.db.session() as session:
            session.execute(delete(FileRecord).where(FileRecord.id == item.record_id))

    def _release(self, item: Due) -> None:
        with self.db.session() as session:
            session.execute(
                update(FileRecord).where(FileRecord.id == item.record_id).values(claimed_until=None)
            )


def _files(top: Path):  # type: ignore[no-untyped-def]
    """(path inside the mailbox, file, stat) of every regular file below ``top``; no symlinks."""
    for folder, dirs, names in os.walk(top, followlinks=False):
        base = Path(folder)
        dirs[:] = [d for d in dirs if not (base / d).is_symlink()]
        for name in names:
            fs = base / name
            try:
                st = os.lstat(fs)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield "/" + fs.relative_to(top).as_posix(), fs, st


class ExpiryWarnings:
    """Mail the uploader and the mailbox's managers of each file that goes soon.

    One mail per person, file and upload (an outbox dedupe key), however often
    and in however many processes the job runs. Accounts without an address,
    disabled ones, and links (a link's upload has no account) get none.
    """

    def __init__(self, db: Database, outbox: Outbox, language: str, login_url: str) -> None:
        self.db = db
        self.outbox = outbox
        self.language = language
        self.login_url = login_url

    def warn(self, soon: list[Due]) -> int:
        queued = 0
        for item in soon:
            for person in self._recipients(item):
                try:
                    self.outbox.enqueue(
                        to=person.email,
                        template="expiry-warning",
                        language=person.language or self.language,
                        context={
                            "recipient_name": person.display_name or person.name,
                            "mailbox": item.mailbox,
                            "path": item.path,
                            "placed_by_you": person.placed,
                            "sensitive": person.sensitive,
                            "when": item.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
                            "login_url": self.login_url,
                            "site": "davbox",
                        },
                        dedupe_key=f"expiry-warning:{item.record_id}:{item.recorded}:{person.name}",
                    )
                    queued += 1
                except ValueError as exc:  # a bad address: the others still get theirs
                    _log.error("expiry warning to %s not queued: %s", person.name, exc)
        return queued

    def _recipients(self, item: Due) -> list[_Person]:
        with self.db.session() as session:
            box_id, sensitive = session.execute(
                select(Mailbox.id, Mailbox.sensitive).where(Mailbox.name == item.mailbox)
            ).one()
            placer = session.execute(
                select(FileRecord.uploaded_by).where(FileRecord.id == item.record_id)
            ).scalar()
            groups = (
                select(GroupMember.user_id)
                .join(MailboxGrant, MailboxGrant.group_id == GroupMember.group_id)
                .where(MailboxGrant.mailbox_id == box_id, MailboxGrant.role == Role.MANAGER)
            )
            managers = select(MailboxGrant.user_id).where(
                MailboxGrant.mailbox_id == box_id, MailboxGrant.role == Role.MANAGER
            )
            rows = session.execute(
                select(User.name, User.email, User.language, User.display_name).where(
                    User.disabled.is_(False),
                    User.email.is_not(None),
                    or_(User.name == placer, User.id.in_(managers), User.id.in_(groups)),
                )
            ).all()
        return [
            _Person(r.name, r.email, r.language, r.display_name, r.name == placer, bool(sensitive))
            for r in rows
            if r.email
        ]


@dataclass(frozen=True)
class _Person:
    name: str
    email: str
    language: str | None
    display_name: str
    placed: bool
    sensitive: bool


class ExpiryScheduler:
    """The expiry job (then housekeeping) every ``interval`` seconds in a background thread."""

    def __init__(
        self,
        job: ExpiryJob,
        interval: float,
        housekeeping: Housekeeping | None = None,
        leases: JobLeases | None = None,
    ) -> None:
        self.housekeeping = housekeeping
        self.leases = leases
        self.interval = interval
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_job(
            self._run,
            "interval",
            seconds=interval,
            id="expiry",
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(UTC) + timedelta(seconds=min(interval, 5)),
        )
        self.job = job

    def _run(self) -> bool:
        """One period's run, if this process got the lease; whether it ran."""
        if self.leases is not None and not self.leases.acquire("expiry", self.interval * 0.9):
            return False  # another process runs it this period
        try:
            deleted = self.job.run()
        except Exception:  # the scheduler must outlive a failing run
            _log.exception("expiry run failed; the next run finishes it")
            return True
        if deleted:
            _log.info("expiry: %d file(s) deleted", len(deleted))
        if self.housekeeping is not None:
            try:
                self.housekeeping.run()
            except Exception:
                _log.exception("housekeeping failed; the next run tries again")
        return True

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
