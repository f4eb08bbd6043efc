"""An account's own notification settings: what its settings page shows and saves.

Contract:
- ``read(db, user, mailboxes)`` -> ``Preferences``: the account's mail
  address and mail language and, per mailbox in ``mailboxes`` (name -> the
  account's roles there), how often it hears of each notice ("off" or one of
  ``EVERY``) and whether "placed" is offered (not to droppers).
- ``plan(db, user, wanted, language)`` checks a whole form against the
  database as it is now, not against the page the user saw: every mailbox
  named must be one the account has a role in; "placed" other than "off"
  needs a role that sees files; anything but "off" needs a mail address;
  values must be known. A refusal raises ``ChoiceRefused`` (a reason code and
  the mailbox, for the page to word) and nothing changes. Mailboxes the form
  does not name keep their settings. Returns only real differences.
- ``apply(db, user, changes)`` writes them in one transaction and bumps the
  notification epoch: the event sink sees them within its refresh (~1 s).
- Only ``user``'s own rows are read or written: the account name comes from
  the caller's session, never from the form. The mail address is read here,
  never set: an address nobody verified would let anyone mail strangers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select

from davbox.accounts import _mailbox, _user
from davbox.db import Database
from davbox.db.models import Mailbox, Subscription
from davbox.mail.render import LANGUAGES
from davbox.notify.subscriptions import EVENTS, EVERY, SEEING_ROLES, bump, roles_in

OFF = "off"
CHOICES = (OFF, *EVERY)
LANGUAGE = "language"  # the ``setting`` of a language change
DEFAULT_LANGUAGE = ""  # the account follows ``mail.language``


class ChoiceRefused(Exception):
    """A form the account may not save: ``reason`` is "no-address", "dropper",
    "no-mailbox" or "unknown-value"; ``mailbox`` the one concerned (or "")."""

    def __init__(self, reason: str, mailbox: str = "") -> None:
        super().__init__(f"{reason}: {mailbox}" if mailbox else reason)
        self.reason = reason
        self.mailbox = mailbox


@dataclass(frozen=True)
class BoxChoice:
    mailbox: str
    may_placed: bool  # droppers are not told of other people's files
    placed: str
    fetched: str


@dataclass(frozen=True)
class Preferences:
    email: str
    language: str  # DEFAULT_LANGUAGE or one of LANGUAGES
    boxes: tuple[BoxChoice, ...]


@dataclass(frozen=True)
class Change:
    """One setting that differs: ``setting`` is an event ("placed"/"fetched") or "language"."""

    mailbox: str
    setting: str
    before: str
    after: str


def _current(db: Database, user: str) -> tuple[str, str, dict[tuple[str, str], str]]:
    with db.session() as session:
        account = _user(session, user)
        rows = session.execute(
            select(Mailbox.name, Subscription.event, Subscription.every)
            .join(Mailbox, Mailbox.id == Subscription.mailbox_id)
            .where(Subscription.user_id == account.id)
        ).all()
        return (
            account.email or "",
            account.language or DEFAULT_LANGUAGE,
            {(box, event): every for box, event, every in rows},
        )


def read(db: Database, user: str, mailboxes: Mapping[str, frozenset[str]]) -> Preferences:
    """The account's settings for the mailboxes it can see (sorted by name)."""
    email, language, subscribed = _current(db, user)
    boxes = tuple(
        BoxChoice(
            name,
            bool(roles & SEEING_ROLES),
            subscribed.get((name, "placed"), OFF) if roles & SEEING_ROLES else OFF,
            subscribed.get((name, "fetched"), OFF),
        )
        for name, roles in sorted(mailboxes.items())
    )
    return Preferences(email, language, boxes)


def plan(
    db: Database, user: str, wanted: Mapping[tuple[str, str], str], language: str | None
) -> list[Change]:
    """The changes a form asks for (``wanted``: (mailbox, event) -> choice; ``language``:
    None to leave it). Raise ``ChoiceRefused`` if any part may not be saved."""
    if language is not None and language not in (DEFAULT_LANGUAGE, *LANGUAGES):
        raise ChoiceRefused("unknown-value")
    email, current_language, subscribed = _current(db, user)
    changes: list[Change] = []
    with db.session() as session:
        account_id = _user(session, user).id
        for (mailbox, event), every in sorted(wanted.items()):
            if event not in EVENTS or every not in CHOICES:
                raise ChoiceRefused("unknown-value", mailbox)
            box = session.execute(
                select(Mailbox.id).where(Mailbox.name == mailbox)
            ).scalar_one_or_none()
            roles = roles_in(session, account_id, box) if box is not None else set()
            if not roles:  # the same answer whether the mailbox exists or not
                raise ChoiceRefused("no-mailbox", mailbox)
            if every != OFF and event == "placed" and not roles & SEEING_ROLES:
                raise ChoiceRefused("dropper", mailbox)
            if every != OFF and not email:
                raise ChoiceRefused("no-address", mailbox)
            before = subscribed.get((mailbox, event), OFF)
            if before != every:
                changes.append(Change(mailbox, event, before, every))
    if language is not None and language != current_language:
        changes.append(Change("", LANGUAGE, current_language, language))
    return changes


def apply(db: Database, user: str, changes: list[Change]) -> None:
    """Write ``changes`` (from ``plan``) in one transaction."""
    if not changes:
        return
    with db.session() as session:
        account = _user(session, user)
        for change in changes:
            if change.setting == LANGUAGE:
                account.language = change.after or None
                continue
            box_id = _mailbox(session, change.mailbox).id
            row = session.execute(
                select(Subscription).where(
                    Subscription.user_id == account.id,
                    Subscription.mailbox_id == box_id,
                    Subscription.event == change.setting,
                )
            ).scalar_one_or_none()
            if change.after == OFF:
                if row is not None:
                    session.delete(row)
            elif row is not None:
                row.every = change.after
            else:
                session.add(
                    Subscription(
                        user_id=account.id,
                        mailbox_id=box_id,
                        event=change.setting,
                        every=change.after,
                        created_at=time.time(),
                    )
                )
        bump(session)
