"""Subscriptions, sensitive mailboxes, link notices and the index the event sink reads.

Contract:
- ``subscribe(db, user, mailbox, event, every)`` records (or changes) that
  ``user`` wants mail about ``event`` ("placed": a new file in the mailbox;
  "fetched": a file the user placed was downloaded by someone else) either
  "immediate"ly or in an "hourly"/"daily" digest. The user needs a mail
  address and a role in the mailbox; "placed" needs a role that can see
  files (not dropper: droppers must not learn other people's file names).
- Every change here bumps the notification epoch (a ``settings`` row).
  ``SubscriptionIndex.snapshot()`` rebuilds its in-memory picture only when
  that epoch or the access epoch (accounts, groups, grants) changed, and
  looks at most every ``refresh`` seconds: an event in a mailbox nobody
  watches costs no query.
- The index leaves out disabled accounts, accounts without a mail address,
  and subscriptions whose user lost the role they need.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from davbox.accounts import AdminError, _mailbox, _user
from davbox.db import EPOCH_KEY, Database
from davbox.db.models import (
    GroupMember,
    Mailbox,
    MailboxGrant,
    Role,
    Setting,
    ShareLink,
    Subscription,
    User,
)
from davbox.mail.outbox import check_address
from davbox.mail.render import LANGUAGES

EVENTS = ("placed", "fetched")
EVERY = ("immediate", "hourly", "daily")
NOTIFY_EPOCH_KEY = "notify_epoch"
SEEING_ROLES = frozenset({Role.MANAGER.value, Role.MEMBER.value, Role.READER.value})


class NotifyError(AdminError):
    """A refused notification setting; ``str()`` is the message."""


@dataclass(frozen=True)
class Recipient:
    user_id: int
    name: str
    display_name: str
    email: str
    language: str | None
    every: str = "immediate"


@dataclass(frozen=True)
class BoxWatch:
    """Who watches one mailbox: ``placed`` subscribers, ``fetched`` ones by user name."""

    sensitive: bool
    placed: tuple[Recipient, ...] = ()
    fetched: dict[str, Recipient] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkWatch:
    link_id: int
    mailbox: str
    label: str
    uploads: bool
    downloads: bool
    creator: Recipient


@dataclass(frozen=True)
class Snapshot:
    boxes: dict[str, BoxWatch] = field(default_factory=dict)
    links: dict[int, LinkWatch] = field(default_factory=dict)
    sensitive: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SubscriptionInfo:
    user: str
    mailbox: str
    event: str
    every: str
    email: str | None


def bump(session: Session) -> None:
    """Record that subscriptions, sensitivity or link notices changed (in the same transaction)."""
    row = session.get(Setting, NOTIFY_EPOCH_KEY)
    if row is None:
        session.add(Setting(key=NOTIFY_EPOCH_KEY, value="1"))
    else:
        row.value = str(int(row.value) + 1)


def roles_in(session: Session, user_id: int, mailbox_id: int) -> set[str]:
    """The user's roles in the mailbox, granted directly or through a group."""
    groups = select(GroupMember.group_id).where(GroupMember.user_id == user_id)
    found = session.execute(
        select(MailboxGrant.role).where(
            MailboxGrant.mailbox_id == mailbox_id,
            or_(MailboxGrant.user_id == user_id, MailboxGrant.group_id.in_(groups)),
        )
    ).scalars()
    return {role.value for role in found}


def _choice(kind: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise NotifyError(f"unknown {kind} {value!r}; use {', '.join(allowed)}")


def subscribe(db: Database, user: str, mailbox: str, event: str, every: str) -> bool:
    """Subscribe (or change how often); True when new. Raise ``NotifyError``/``AdminError``."""
    _choice("event", event, EVENTS)
    _choice("frequency", every, EVERY)
    with db.session() as session:
        account = _user(session, user)
        box = _mailbox(session, mailbox)
        if not account.email:
            raise NotifyError(f"{user!r} has no mail address (davbox notify address {user} ...)")
        roles = roles_in(session, account.id, box.id)
        if not roles:
            raise NotifyError(f"{user!r} has no role in mailbox {mailbox!r}")
        if event == "placed" and not roles & SEEING_ROLES:
            raise NotifyError(
                f"{user!r} may only drop files in {mailbox!r}, so cannot be told about new files"
            )
        row = session.execute(
            select(Subscription).where(
                Subscription.user_id == account.id,
                Subscription.mailbox_id == box.id,
                Subscription.event == event,
            )
        ).scalar_one_or_none()
        new = row is None
        if row is None:
            session.add(
                Subscription(
                    user_id=account.id,
                    mailbox_id=box.id,
                    event=event,
                    every=every,
                    created_at=time.time(),
                )
            )
        else:
            row.every = every
        bump(session)
    return new


def unsubscribe(db: Database, user: str, mailbox: str | None, event: str | None) -> int:
    """Remove the user's subscriptions (all, one mailbox's, or one event's); return how many."""
    if event is not None:
        _choice("event", event, EVENTS)
    with db.session() as session:
        account = _user(session, user)
        query = delete(Subscription).where(Subscription.user_id == account.id)
        if mailbox is not None:
            query = query.where(Subscription.mailbox_id == _mailbox(session, mailbox).id)
        if event is not None:
            query = query.where(Subscription.event == event)
        removed = session.execute(query).rowcount  # type: ignore[attr-defined]
        bump(session)
    return int(removed)


def list_subscriptions(
    db: Database, user: str | None = None, mailbox: str | None = None
) -> list[SubscriptionInfo]:
    query = (
        select(User.name, Mailbox.name, Subscription.event, Subscription.every, User.email)
        .join(User, User.id == Subscription.user_id)
        .join(Mailbox, Mailbox.id == Subscription.mailbox_id)
        .order_by(User.name, Mailbox.name, Subscription.event)
    )
    if user is not None:
        query = query.where(User.name == user)
    if mailbox is not None:
        query = query.where(Mailbox.name == mailbox)
    with db.session() as session:
        return [SubscriptionInfo(*row) for row in session.execute(query)]


def set_sensitive(db: Database, mailbox: str, sensitive: bool) -> None:
    with db.session() as session:
        _mailbox(session, mailbox).sensitive = sensitive
        bump(session)


def set_language(db: Database, user: str, language: str | None) -> None:
    if language is not None:
        _choice("language", language, LANGUAGES)
    with db.session() as session:
        _user(session, user).language = language
        bump(session)


def set_address(db: Database, user: str, address: str | None) -> None:
    if address is not None:
        try:
            check_address(address)
        except ValueError as exc:
            raise NotifyError(str(exc)) from None
    with db.session() as session:
        _user(session, user).email = address
        bump(session)


def require_address(db: Database, user: str) -> None:
    """Raise ``NotifyError`` unless the account has a mail address to be notified at."""
    with db.session() as session:
        if not _user(session, user).email:
            raise NotifyError(f"{user!r} has no mail address (davbox notify address {user} ...)")


def set_link_notify(db: Database, link_id: int, *, uploads: bool, downloads: bool) -> None:
    """Whether a link's creator is mailed about each drop and each download through it."""
    with db.session() as session:
        link = session.get(ShareLink, link_id)
        if link is None:
            raise NotifyError(f"there is no link {link_id}")
        if uploads or downloads:
            creator = session.get(User, link.created_by) if link.created_by else None
            if creator is None:
                raise NotifyError(
                    f"link {link_id} has no creator to notify (make it with --as USER)"
                )
            if not creator.email:
                raise NotifyError(f"{creator.name!r}, who made link {link_id}, has no mail address")
        link.notify_uploads = uploads
        link.notify_downloads = downloads
        bump(session)


def _epochs(db: Database) -> tuple[str, str]:
    with db.session() as session:
        rows = dict(
            session.execute(
                select(Setting.key, Setting.value).where(
                    Setting.key.in_((EPOCH_KEY, NOTIFY_EPOCH_KEY))
                )
            ).all()
        )
    return rows.get(EPOCH_KEY, "0"), rows.get(NOTIFY_EPOCH_KEY, "0")


def load_snapshot(db: Database) -> Snapshot:
    """Read every live subscription and link notice (see the module's contract)."""
    boxes: dict[str, tuple[bool, list[Recipient], dict[str, Recipient]]] = {}
    links: dict[int, LinkWatch] = {}
    with db.session() as session:
        sensitive = frozenset(
            session.execute(select(Mailbox.name).where(Mailbox.sensitive.is_(True))).scalars()
        )
        rows = session.execute(
            select(Subscription, User, Mailbox)
            .join(User, User.id == Subscription.user_id)
            .join(Mailbox, Mailbox.id == Subscription.mailbox_id)
            .where(User.disabled.is_(False), User.email.is_not(None), User.email != "")
            .order_by(Subscription.id)
        ).all()
        for sub, user, box in rows:
            roles = roles_in(session, user.id, box.id)
            if not roles or (sub.event == "placed" and not roles & SEEING_ROLES):
                continue
            recipient = _recipient(user, sub.every)
            _, placed, fetched = boxes.setdefault(box.name, (box.sensitive, [], {}))
            if sub.event == "placed":
                placed.append(recipient)
            else:
                fetched[user.name] = recipient
        for link, user, box in session.execute(
            select(ShareLink, User, Mailbox)
            .join(User, User.id == ShareLink.created_by)
            .join(Mailbox, Mailbox.id == ShareLink.mailbox_id)
            .where(
                or_(ShareLink.notify_uploads.is_(True), ShareLink.notify_downloads.is_(True)),
                ShareLink.revoked_at.is_(None),
                User.disabled.is_(False),
                User.email.is_not(None),
                User.email != "",
            )
        ).all():
            links[link.id] = LinkWatch(
                link.id,
                box.name,
                link.label,
                link.notify_uploads,
                link.notify_downloads,
                _recipient(user, "immediate"),
            )
    return Snapshot(
        {name: BoxWatch(s, tuple(p), f) for name, (s, p, f) in boxes.items()},
        links,
        sensitive,
    )


def _recipient(user: User, every: str) -> Recipient:
    return Recipient(
        user.id, user.name, user.display_name or user.name, user.email or "", user.language, every
    )


class SubscriptionIndex:
    """The current ``Snapshot``, re-read when an epoch moved (checked every ``refresh`` s)."""

    def __init__(self, db: Database, refresh: float = 1.0) -> None:
        self.db = db
        self.refresh = refresh
        self._snapshot: Snapshot | None = None
        self._epochs: tuple[str, str] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        current = self._snapshot
        if current is not None and time.monotonic() - self._checked < self.refresh:
            return current
        if current is not None and not self._lock.acquire(blocking=False):
            return current  # another thread is looking; this event uses what there is
        if current is None:
            self._lock.acquire()
        try:
            if self._snapshot is not None and time.monotonic() - self._checked < self.refresh:
                return self._snapshot
            epochs = _epochs(self.db)
            if self._snapshot is None or epochs != self._epochs:
                self._snapshot = load_snapshot(self.db)
                self._epochs = epochs
            self._checked = time.monotonic()
            return self._snapshot
        finally:
            self._lock.release()
