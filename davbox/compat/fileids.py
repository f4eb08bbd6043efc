"""Stable ids for files and folders (ownCloud's ``oc:fileid`` and ``oc:id``).

Contract:
- ``FileIds.lookup(mailbox_id, paths)`` gives an id for each path (a mailbox
  path, "/" for its top folder), making missing ones in one statement; ids
  are never reused.
- ``FileIdSink`` (an ``EventBus`` sink) keeps them in step with what the
  audit trail recorded: a MOVE carries the ids of the item and everything
  below it to the new place (across mailboxes too); DELETE and expiry drop
  them; an overwrite keeps the path and so the id; a COPY's items get new
  ids when first asked for. It never raises into a request.
- ``oc_id(fileid, instance)`` is ownCloud's form: eight digits and the
  installation's instance id.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from davbox.db import Database
from davbox.db.models import FileId, Mailbox
from davbox.events import Deleted, Event, FileExpired, Moved

_log = logging.getLogger("davbox.fileids")
_BATCH = 400


def oc_id(fileid: int, instance: str) -> str:
    return f"{fileid:08d}{instance}"


def _below(path: str) -> str:
    """A LIKE pattern for everything inside folder ``path`` (wildcards escaped)."""
    escaped = path.rstrip("/").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"


class FileIds:
    def __init__(self, db: Database) -> None:
        self.db = db

    def lookup(self, mailbox_id: int, paths: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(paths), _BATCH):
            batch = paths[start : start + _BATCH]
            found.update(self._known(mailbox_id, batch))
            missing = [p for p in batch if p not in found]
            if missing:
                self._make(mailbox_id, missing)
                found.update(self._known(mailbox_id, missing))
        return found

    def set_checksums(self, mailbox_id: int, path: str, checksums: str, stamp: str) -> None:
        """Keep the checksums of the content just stored at ``path`` (its stamp with it)."""
        self.lookup(mailbox_id, [path])
        with self.db.session() as session:
            session.execute(
                update(FileId)
                .where(FileId.mailbox_id == mailbox_id, FileId.path == path)
                .values(checksums=checksums, stamp=stamp)
            )

    def checksums(self, mailbox_id: int, path: str, stamp: str) -> str | None:
        """The kept checksums of ``path`` if the file is still the one they were made of."""
        with self.db.session() as session:
            row = session.execute(
                select(FileId.checksums, FileId.stamp).where(
                    FileId.mailbox_id == mailbox_id, FileId.path == path
                )
            ).first()
        if row is None or row.stamp != stamp:
            return None
        return row.checksums

    def _known(self, mailbox_id: int, paths: list[str]) -> dict[str, int]:
        with self.db.session() as session:
            rows = session.execute(
                select(FileId.path, FileId.id).where(
                    FileId.mailbox_id == mailbox_id, FileId.path.in_(paths)
                )
            )
            return {path: id_ for path, id_ in rows}

    def _make(self, mailbox_id: int, paths: list[str]) -> None:
        values = [{"mailbox_id": mailbox_id, "path": p} for p in paths]
        with self.db.session() as session:
            insert = (
                pg_insert
                if session.bind and session.bind.dialect.name == "postgresql"
                else sqlite_insert
            )
            session.execute(insert(FileId).values(values).on_conflict_do_nothing())


class FileIdSink:
    def __init__(self, db: Database) -> None:
        self.db = db

    def handle(self, event: Event) -> None:
        if not isinstance(event, Moved | Deleted | FileExpired):
            return
        if event.status not in (200, 201, 204):
            return
        try:
            with self.db.session() as session:
                self._apply(session, event)
        except SQLAlchemyError as exc:
            _log.error("file ids not updated for %s %s%s: %s", event.kind, event.mailbox,
                       event.path, exc)  # fmt: skip

    def _apply(self, session: Session, event: Event) -> None:
        box = _mailbox_id(session, event.mailbox)
        if box is None:
            return
        path = event.path.rstrip("/") or "/"
        if isinstance(event, Deleted | FileExpired):
            session.execute(delete(FileId).where(FileId.mailbox_id == box, _at_or_below(path)))
            return
        assert isinstance(event, Moved)
        target_box = _mailbox_id(session, event.to_mailbox or event.mailbox)
        target = event.to_path.rstrip("/") or "/"
        if target_box is None:
            return
        # What was at the target is replaced: its ids go.
        session.execute(delete(FileId).where(FileId.mailbox_id == target_box, _at_or_below(target)))
        rows = session.execute(
            select(FileId.id, FileId.path).where(FileId.mailbox_id == box, _at_or_below(path))
        ).all()
        for id_, old in rows:
            session.execute(
                update(FileId)
                .where(FileId.id == id_)
                .values(mailbox_id=target_box, path=target + old[len(path) :])
            )


def _at_or_below(path: str):  # type: ignore[no-untyped-def]
    return (FileId.path == path) | FileId.path.like(_below(path), escape="\\")


def _mailbox_id(session: Session, name: str) -> int | None:
    return session.execute(select(Mailbox.id).where(Mailbox.name == name)).scalar_one_or_none()
