"""The server-recorded upload time of every file: what retention counts from.

Contract:
- ``FileIndexSink`` (an ``EventBus`` sink, after the audit sink) keeps the
  ``file_records`` table in step with what was recorded: a stored upload
  (WebDAV PUT 201/204, a link upload) sets the path's upload time to the
  event's time (a replaced file is a new placement); a MOVE carries the
  record (and those below a moved folder) to the new path; a COPY places
  the copy now; a DELETE drops the records of the path and below it. It
  never raises into a request: a failure is logged, and a file without a
  record is first seen by the expiry job, which counts from then (later,
  never sooner).
- ``record_seen(db, mailbox_id, path, at)`` adds the record for a file found
  without one (``INSERT`` that loses quietly to a concurrent one).
- ``available_until``/``set_available_until``: the uploader's own end of a
  file's availability (kept with its record; a new upload of the path clears
  it, a move carries it).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from davbox.db import Database
from davbox.db.models import FileRecord, Mailbox
from davbox.events import Copied, Deleted, Event, LinkUploaded, Moved, Uploaded

_log = logging.getLogger("davbox.file_index")
_STORED = (201, 204)


class FileIndexSink:
    def __init__(self, db: Database) -> None:
        self.db = db

    def handle(self, event: Event) -> None:
        if not isinstance(event, Uploaded | LinkUploaded | Moved | Copied | Deleted):
            return
        if event.status not in _STORED:
            return
        try:
            with self.db.session() as session:
                self._apply(session, event)
        except SQLAlchemyError as exc:
            _log.error("upload times not updated for %s %s%s: %s", event.kind,
                       event.mailbox, event.path, exc)  # fmt: skip

    def _apply(self, session: Session, event: Event) -> None:
        at = event.time.timestamp()
        box = self._mailbox_id(session, event.mailbox)
        if box is None:
            return
        if isinstance(event, Uploaded | LinkUploaded):
            _place(session, box, event.path, at, event.actor)
        elif isinstance(event, Deleted):
            session.execute(delete(FileRecord).where(_at_or_below(box, event.path)))
        elif isinstance(event, Moved | Copied):
            target = self._mailbox_id(session, event.to_mailbox or event.mailbox)
            if target is None:
                return
            session.execute(delete(FileRecord).where(_at_or_below(target, event.to_path)))
            if isinstance(event, Moved):
                _move(session, box, event.path, target, event.to_path)
            else:
                _place(session, target, event.to_path, at, event.actor)

    @staticmethod
    def _mailbox_id(session: Session, name: str) -> int | None:
        # Looked up each time (one indexed query beside a whole upload): a
        # mailbox removed and made again under its name gets a new id.
        return session.execute(select(Mailbox.id).where(Mailbox.name == name)).scalar()


def _at_or_below(mailbox_id: int, path: str):  # type: ignore[no-untyped-def]
    exact = path.rstrip("/") or "/"
    prefix = path.rstrip("/") + "/"
    return (FileRecord.mailbox_id == mailbox_id) & or_(
        FileRecord.path == exact,
        func.substr(FileRecord.path, 1, len(prefix)) == prefix,
    )


def _place(session: Session, mailbox_id: int, path: str, at: float, actor: str) -> None:
    changed = session.execute(
        update(FileRecord)
        .where(FileRecord.mailbox_id == mailbox_id, FileRecord.path == path)
        .values(uploaded_at=at, uploaded_by=actor, claimed_until=None, available_until=None)
    )
    if changed.rowcount == 0:  # type: ignore[attr-defined]
        session.add(FileRecord(mailbox_id=mailbox_id, path=path, uploaded_at=at, uploaded_by=actor))


def _move(session: Session, source: int, path: str, target: int, to_path: str) -> None:
    old = path.rstrip("/")
    new = to_path.rstrip("/")
    rows = session.execute(select(FileRecord).where(_at_or_below(source, path))).scalars()
    for row in rows:
        row.mailbox_id = target
        row.path = new + row.path[len(old) :]


def record_seen(db: Database, mailbox_id: int, path: str, at: float) -> None:
    """Record a file found without a record as placed at ``at`` (another run may beat us)."""
    try:
        with db.session() as session:
            session.add(FileRecord(mailbox_id=mailbox_id, path=path, uploaded_at=at))
    except IntegrityError:
        pass


def available_until(db: Database, mailbox: str, path: str) -> datetime | None:
    """The uploader's own end of availability of a file, if one was set."""
    with db.session() as session:
        value = session.execute(
            select(FileRecord.available_until)
            .join(Mailbox, Mailbox.id == FileRecord.mailbox_id)
            .where(Mailbox.name == mailbox, FileRecord.path == path)
        ).scalar()
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def set_available_until(
    db: Database, mailbox: str, path: str, when: datetime | None, now: datetime | None = None
) -> None:
    """Set (``None``: clear) a file's end of availability; a file without a record gets
    one as placed ``now`` (see ``record_seen``). The caller checked the time and the right."""
    now = now or datetime.now(UTC)
    value = when.timestamp() if when is not None else None
    with db.session() as session:
        box = session.execute(select(Mailbox.id).where(Mailbox.name == mailbox)).scalar_one()
        changed = session.execute(
            update(FileRecord)
            .where(FileRecord.mailbox_id == box, FileRecord.path == path)
            .values(available_until=value)
        )
        if changed.rowcount == 0:  # type: ignore[attr-defined]
            session.add(
                FileRecord(
                    mailbox_id=box, path=path, uploaded_at=now.timestamp(), available_until=value
                )
            )


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC if no zone is given) in the future; ValueError otherwise."""
    now = now or datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time; use e.g. 2026-12-31T17:00:00Z") from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment <= now:
        raise ValueError("that time has passed already")
    return moment
