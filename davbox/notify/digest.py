"""Digest mails: the hourly and daily summaries of digest items, and their scheduler.

Contract:
- ``send_digests(db, outbox, settings, every)`` turns each user's pending
  items of that frequency into one mail. Per user, one transaction deletes
  exactly the items it lists and queues the mail: if another process took
  some of them first (the delete removes fewer rows than were read), the
  transaction is rolled back and that user is left to the other process.
  So with several server processes each item is mailed once.
- Items of users who since lost their mail address or were disabled are
  dropped. Sensitive mailboxes appear as counts only (their items hold no
  path).
- ``DigestScheduler`` is an APScheduler ``BackgroundScheduler`` (UTC):
  hourly digests at every full hour, daily ones at ``mail.daily_digest_at``.
  Items wait in the database: what a run missed while the server was down
  goes out with the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import delete, select

from davbox.config import Settings
from davbox.db import Database
from davbox.db.models import DigestItem, User
from davbox.mail.outbox import Outbox
from davbox.notify.sink import SETTINGS_PATH
from davbox.paths import base_url

_log = logging.getLogger("davbox.notify")
FREQUENCIES = ("hourly", "daily")


class _Taken(Exception):
    """Another process sent some of these items: leave this user to it."""


def send_digests(db: Database, outbox: Outbox, settings: Settings, every: str) -> int:
    """Queue one digest mail per user with pending ``every`` items; return how many."""
    with db.session() as session:
        users = list(
            session.execute(
                select(DigestItem.user_id).where(DigestItem.every == every).distinct()
            ).scalars()
        )
    queued = 0
    for user_id in users:
        try:
            queued += _send_one(db, outbox, settings, every, user_id)
        except _Taken:
            continue
        except Exception:
            _log.exception("digest for user %d not queued", user_id)
    if queued:
        outbox.notify()
    return queued


def _send_one(db: Database, outbox: Outbox, settings: Settings, every: str, user_id: int) -> int:
    with db.session() as session:
        items = list(
            session.execute(
                select(DigestItem)
                .where(DigestItem.user_id == user_id, DigestItem.every == every)
                .order_by(DigestItem.id)
            ).scalars()
        )
        if not items:
            return 0
        removed = session.execute(
            delete(DigestItem).where(DigestItem.id.in_([item.id for item in items]))
        ).rowcount  # type: ignore[attr-defined]
        if removed != len(items):
            raise _Taken()
        user = session.get(User, user_id)
        if user is None or user.disabled or not user.email:
            return 0
        language = user.language or settings.mail.language
        context = digest_context(items, every, user.display_name or user.name, settings)
        rendered = outbox.templates.render("digest", language, context)
        outbox.add(session, to=user.email, template="digest", language=language, rendered=rendered)
    return 1


def digest_context(
    items: Sequence[DigestItem], every: str, recipient_name: str, settings: Settings
) -> dict[str, Any]:
    boxes: dict[str, dict[str, Any]] = {}
    for item in items:
        box = boxes.setdefault(
            item.mailbox,
            {"mailbox": item.mailbox, "sensitive": False, "placed": [], "fetched": []},
        )
        box["sensitive"] = box["sensitive"] or item.sensitive
        box[item.event].append(
            {
                "path": item.path,
                "actor": item.actor,
                "when": datetime.fromtimestamp(item.at, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            }
        )
    for box in boxes.values():
        if box["sensitive"]:  # a mailbox made sensitive after some items were stored
            for entry in box["placed"] + box["fetched"]:
                entry["path"] = entry["actor"] = ""
    base = base_url(settings)
    return {
        "site": "davbox",
        "recipient_name": recipient_name,
        "every": every,
        "boxes": [boxes[name] for name in sorted(boxes)],
        "placed_count": sum(len(b["placed"]) for b in boxes.values()),
        "fetched_count": sum(len(b["fetched"]) for b in boxes.values()),
        "login_url": f"{base}/login",
        "settings_url": f"{base}{SETTINGS_PATH}",
    }


class DigestScheduler:
    def __init__(self, db: Database, outbox: Outbox, settings: Settings) -> None:
        self.scheduler = BackgroundScheduler(timezone=UTC)
        hour, minute = (int(part) for part in settings.mail.daily_digest_at.split(":"))
        triggers = {
            "hourly": CronTrigger(minute=0, timezone=UTC),
            "daily": CronTrigger(hour=hour, minute=minute, timezone=UTC),
        }
        for every, trigger in triggers.items():
            self.scheduler.add_job(
                send_digests,
                trigger,
                args=(db, outbox, settings, every),
                id=f"digest-{every}",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=3600,
            )

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
