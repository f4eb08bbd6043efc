"""The notification sink: events in, outbox mails and digest items out.

Contract:
- ``NotificationSink.handle(event)`` never raises: mail is not the audit
  trail, so a failure here is logged and the operation goes on. It runs
  after the audit sink, so it only sees operations that were recorded.
- What it acts on: a stored upload (``upload`` with status 201/204, or
  ``link-uploaded``) -> "placed"; a whole download (``download`` 200, or
  206 from byte 0, sent completely; ``link-downloaded``) -> "fetched"; a
  throttled login (``login-refused``, outcome "throttled") -> a warning to
  the account's owner. Everything else costs one set lookup.
- "placed" goes to the mailbox's placed-subscribers except the uploader;
  "fetched" to the file's placer (the actor of the last stored upload at
  that path in the audit trail) if they subscribed and are not the one
  fetching; a link's creator hears of drops/downloads through that link if
  the link asks for it (and then not a second time as a subscriber).
- Immediate notices are rendered and queued in the outbox, digest ones
  stored as digest items, all in one transaction per event: what is
  committed is delivered later, whatever SMTP does. Sensitive mailboxes'
  notices name no file (digest items do not even store the path).
- Throttle warnings: at most one per account per ``auth.throttle_window``
  (in this process by time, across processes by an outbox dedupe key per
  window slot); accounts without a mail address cost one lookup per window.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from davbox.config import Settings
from davbox.db import Database
from davbox.db.models import AuditRecord, DigestItem, User
from davbox.events import Event
from davbox.mail.outbox import Outbox
from davbox.notify.subscriptions import LinkWatch, Recipient, Snapshot, SubscriptionIndex
from davbox.paths import base_url

_log = logging.getLogger("davbox.notify")
HANDLED = frozenset({"upload", "link-uploaded", "download", "link-downloaded", "login-refused"})
STORED = (201, 204)
SETTINGS_PATH = "/account/notifications"  # where an account changes its subscriptions


def when_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def placer_of(db: Database, mailbox: str, path: str) -> str | None:
    """Who placed the file now at ``mailbox``/``path``: the last stored upload's actor."""
    with db.session() as session:
        return session.execute(
            select(AuditRecord.actor)
            .where(
                AuditRecord.mailbox == mailbox,
                AuditRecord.path == path,
                AuditRecord.kind.in_(("upload", "link-uploaded")),
                AuditRecord.status.in_(STORED),
            )
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        ).scalar_one_or_none()


class NotificationSink:
    def __init__(
        self, db: Database, outbox: Outbox, index: SubscriptionIndex, settings: Settings
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.index = index
        self.settings = settings
        self._warned: dict[str, float] = {}  # account -> time.monotonic() of the last look
        self._warned_lock = threading.Lock()

    def handle(self, event: Event) -> None:
        if event.kind not in HANDLED:
            return
        try:
            self._handle(event)
        except Exception:
            _log.exception(
                "notification for %s of %s%s (request %s) not queued",
                event.kind,
                event.mailbox,
                event.path,
                event.request_id,
            )

    def _handle(self, event: Event) -> None:
        values = event.fields()
        kind = event.kind
        if kind == "login-refused":
            if values.get("outcome") == "throttled" and event.actor:
                self._throttled(event, values)
            return
        if kind == "upload" and event.status not in STORED:
            return
        if kind == "download" and not _whole_download(values):
            return
        snapshot = self.index.snapshot()
        link_id = _link_of(values)
        link = snapshot.links.get(link_id) if link_id is not None else None
        if kind in ("upload", "link-uploaded"):
            self._placed(event, snapshot, link if link and link.uploads else None)
        else:
            self._fetched(event, snapshot, link if link and link.downloads else None)

    # -- placed and fetched ---------------------------------------------------------------

    def _placed(self, event: Event, snapshot: Snapshot, link: LinkWatch | None) -> None:
        watch = snapshot.boxes.get(event.mailbox)
        recipients: dict[str, tuple[Recipient, str]] = {}
        if watch is not None:
            for recipient in watch.placed:
                if recipient.name != event.actor:
                    recipients[recipient.name] = (recipient, "placed")
        if link is not None and link.creator.name != event.actor:
            recipients[link.creator.name] = (link.creator, "link-placed")
        if recipients:
            self._queue(event, "placed", snapshot, recipients.values(), link)

    def _fetched(self, event: Event, snapshot: Snapshot, link: LinkWatch | None) -> None:
        watch = snapshot.boxes.get(event.mailbox)
        recipients: dict[str, tuple[Recipient, str]] = {}
        if watch is not None and watch.fetched and not event.fields().get("archive"):
            placer = placer_of(self.db, event.mailbox, event.path)
            if placer is not None and placer != event.actor and placer in watch.fetched:
                recipients[placer] = (watch.fetched[placer], "fetched")
        if link is not None and link.creator.name != event.actor:
            recipients[link.creator.name] = (link.creator, "link-fetched")
        if recipients:
            self._queue(event, "fetched", snapshot, recipients.values(), link)

    def _queue(
        self,
        event: Event,
        what: str,
        snapshot: Snapshot,
        recipients: Any,
        link: LinkWatch | None,
    ) -> None:
        sensitive = event.mailbox in snapshot.sensitive
        queued = False
        with self.db.session() as session:
            for recipient, template in recipients:
                if recipient.every != "immediate":
                    session.add(
                        DigestItem(
                            user_id=recipient.user_id,
                            every=recipient.every,
                            event=what,
                            mailbox=event.mailbox,
                            path="" if sensitive else event.path,
                            actor="" if sensitive else _actor(event),
                            sensitive=sensitive,
                            at=event.time.timestamp(),
                        )
                    )
                    continue
                language = recipient.language or self.settings.mail.language
                context = self._context(event, recipient, sensitive, link)
                if template in ("placed", "fetched"):  # a subscription: the page turns it off
                    context["settings_url"] = f"{base_url(self.settings)}{SETTINGS_PATH}"
                rendered = self.outbox.templates.render(template, language, context)
                self.outbox.add(
                    session,
                    to=recipient.email,
                    template=template,
                    language=language,
                    rendered=rendered,
                )
                queued = True
        if queued:
            self.outbox.notify()

    def _context(
        self, event: Event, recipient: Recipient, sensitive: bool, link: LinkWatch | None
    ) -> dict[str, Any]:
        base = base_url(self.settings)
        link_id = _link_of(event.fields())
        return {
            "site": "davbox",
            "recipient_name": recipient.display_name,
            "mailbox": event.mailbox,
            "sensitive": sensitive,
            "path": "" if sensitive else event.path,
            "name": "" if sensitive else event.path.rstrip("/").rpartition("/")[2],
            "by": _actor(event),
            "via_link": link_id is not None,
            "link_id": link_id,
            "link_label": link.label if link is not None else "",
            "when": when_text(event.time),
            "login_url": f"{base}/login",
        }

    # -- throttled logins -----------------------------------------------------------------

    def _throttled(self, event: Event, values: dict[str, Any]) -> None:
        window = self.settings.auth.throttle_window
        name = event.actor
        now = time.monotonic()
        with self._warned_lock:
            last = self._warned.get(name)
            if last is not None and now - last < window:
                return
            self._warned[name] = now
            if len(self._warned) > 10000:  # many names guessed: forget the old ones
                self._warned = {k: v for k, v in self._warned.items() if now - v < window}
        with self.db.session() as session:
            user = _enabled_user(session, name)
            if user is None or not user.email:
                return
            language = user.language or self.settings.mail.language
            email, display = user.email, user.display_name or user.name
        slot = int(event.time.timestamp() // window)
        self.outbox.enqueue(
            to=email,
            template="throttled",
            language=language,
            context={
                "site": "davbox",
                "recipient_name": display,
                "account": name,
                "client": event.client or "?",
                "via": values.get("via", ""),
                "when": when_text(event.time),
                "minutes": max(1, round(window / 60)),
                "login_url": f"{base_url(self.settings)}/login",
            },
            dedupe_key=f"throttled:{name}:{slot}",
        )


def _enabled_user(session: Session, name: str) -> User | None:
    return session.execute(
        select(User).where(User.name == name, User.disabled.is_(False))
    ).scalar_one_or_none()


def _actor(event: Event) -> str:
    return event.actor or "?"


def _link_of(values: dict[str, Any]) -> int | None:
    """The share link a request came through: link pages name it, link WebDAV as credential."""
    if values.get("link_id") is not None:
        return int(values["link_id"])
    if values.get("actor_kind") == "link" and values.get("credential_id") is not None:
        return int(values["credential_id"])
    return None


def _whole_download(values: dict[str, Any]) -> bool:
    if not values.get("complete", True):
        return False
    status = values.get("status")
    return status == 200 or (status == 206 and str(values.get("range", "")).startswith("bytes 0-"))
