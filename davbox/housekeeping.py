"""Housekeeping: what no one needs any more goes, on the expiry job's schedule.

Contract: ``Housekeeping.run(now)`` removes, each step in its own transaction
and safe to repeat (with several processes too, all by ``DELETE ... WHERE``):

- unfinished uploads (temporary files) untouched for ``upload_age`` seconds
  (their owners are gone: live uploads touch theirs with every chunk);
- web sessions past their idle or absolute timeout (``SessionStore``);
- login-failure rows older than the throttle window (they count no more);
- one-time link codes that expired, and their rows;
- sent mails older than ``mail_age`` seconds (their bodies went at sending);
- the address an app password was last used from, once that use is older
  than ``use_age`` seconds (the time of the last use stays);
- with ``audit_keep_days`` (``audit.keep_days``, at least a year), audit
  records older than that (``AuditStore.trim``: the chain keeps a sealed
  anchor, ``audit verify`` still checks the rest), itself an ``audit-trim``
  record.

It returns how many of each went. Files of mailboxes are the expiry job's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, update

from davbox.audit import AuditStore
from davbox.db import Database
from davbox.db.models import AppPassword, AuthFailure, LinkCode, OutboxMail
from davbox.events import AuditTrimmed, EventBus
from davbox.providers.storage.filesystem import FilesystemStorage
from davbox.sessions import SessionStore

_log = logging.getLogger("davbox.housekeeping")
DAY = 86400.0


@dataclass
class Swept:
    counts: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def __str__(self) -> str:
        return ", ".join(f"{name} {count}" for name, count in self.counts.items())


class Housekeeping:
    def __init__(
        self,
        db: Database,
        storage: FilesystemStorage,
        sessions: SessionStore,
        *,
        throttle_window: float,
        upload_age: float = DAY,
        mail_age: float = 30 * DAY,
        use_age: float = 90 * DAY,
        audit: AuditStore | None = None,
        audit_keep_days: int | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.audit = audit
        self.audit_keep_days = audit_keep_days
        self.events = events
        self.db = db
        self.storage = storage
        self.sessions = sessions
        self.throttle_window = throttle_window
        self.upload_age = upload_age
        self.mail_age = mail_age
        self.use_age = use_age

    def run(self, now: float | None = None) -> Swept:
        now = time.time() if now is None else now
        swept = Swept()
        swept.counts["unfinished uploads"] = self.storage.sweep_temps(self.upload_age, now=now)
        swept.counts["web sessions"] = self.sessions.sweep(now)
        with self.db.session() as session:
            swept.counts["login failures"] = session.execute(
                delete(AuthFailure).where(AuthFailure.at < now - self.throttle_window)
            ).rowcount  # type: ignore[attr-defined]
        with self.db.session() as session:
            swept.counts["link codes"] = session.execute(
                delete(LinkCode).where(LinkCode.expires_at <= now)
            ).rowcount  # type: ignore[attr-defined]
        with self.db.session() as session:
            swept.counts["sent mails"] = session.execute(
                delete(OutboxMail).where(
                    OutboxMail.state == "sent", OutboxMail.sent_at < now - self.mail_age
                )
            ).rowcount  # type: ignore[attr-defined]
        with self.db.session() as session:
            swept.counts["app-password addresses"] = session.execute(
                update(AppPassword)
                .where(
                    AppPassword.last_used_from.is_not(None),
                    AppPassword.last_used_at < datetime.fromtimestamp(now - self.use_age, UTC),
                )
                .values(last_used_from=None)
            ).rowcount  # type: ignore[attr-defined]
        swept.counts["audit records"] = self._trim_audit(now)
        if swept:
            _log.info("housekeeping: %s", swept)
        return swept

    def _trim_audit(self, now: float) -> int:
        if self.audit is None or self.audit_keep_days is None:
            return 0
        before = datetime.fromtimestamp(now - self.audit_keep_days * DAY, UTC)
        removed, anchor = self.audit.trim(before)
        if removed and self.events is not None:
            self.events.emit(
                AuditTrimmed(
                    actor="system",
                    actor_kind="system",
                    removed=removed,
                    anchor=anchor,
                    before=before.isoformat(timespec="seconds"),
                )
            )
        return removed
