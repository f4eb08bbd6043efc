"""App passwords: one random password per WebDAV client, revocable, optionally limited.

WebDAV clients (Explorer, Finder, cadaver, sync clients) can only send a user
name and a password on every request; with two-factor login the account
password must not open WebDAV, so each client gets its own app password.

Contract:
- ``create`` returns the password once; only an HMAC-SHA256 of it (keyed by
  the installation's secret) is stored, so the database cannot reveal it.
  Passwords are 30 characters from a 31-letter alphabet (about 148 bits) from
  ``secrets``, grouped for typing: ``abcde-fghjk-mnpqr-stuvw-xyz23-45678``.
- ``verify`` looks the HMAC up (a constant-time comparison confirms it), checks
  that it belongs to the named account, and records when and from where it was
  last used. Revoking takes effect within ``auth.refresh_interval``.
- An app password may be limited to some mailboxes and/or to reading.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from davbox.accounts import MAILBOX_RE, AdminError, _check_name, _mailbox, _user
from davbox.db import Database, bump_epoch
from davbox.db.models import AppPassword, User, utcnow

ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
PATTERN = re.compile(r"^[a-z2-9]{5}(?:-[a-z2-9]{5}){5}$")


@dataclass(frozen=True)
class AppPasswordInfo:
    id: int
    user: str
    label: str
    mailboxes: tuple[str, ...]
    read_only: bool
    created_at: datetime
    last_used_at: datetime | None
    last_used_from: str | None


@dataclass(frozen=True)
class Grant:
    """What a verified app password opens."""

    user_id: int
    name: str
    mailboxes: frozenset[str] | None
    read_only: bool
    id: int = 0  # the app password's id (audit records name it, never the password)


def generate() -> str:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(30))
    return "-".join(chars[i : i + 5] for i in range(0, 30, 5))


def digest(secret: bytes, password: str) -> str:
    return hmac.new(secret, password.encode(), hashlib.sha256).hexdigest()


def create(
    db: Database,
    username: str,
    label: str,
    *,
    mailboxes: tuple[str, ...] = (),
    read_only: bool = False,
) -> str:
    """Make an app password for ``username``; return it (it is shown only this once)."""
    _check_name("app password label", label, MAILBOX_RE)
    password = generate()
    secret = db.server_secret()
    with db.session() as session:
        user = _user(session, username)
        for name in mailboxes:
            _mailbox(session, name)
        taken = session.execute(
            select(AppPassword.id).where(AppPassword.user_id == user.id, AppPassword.label == label)
        ).first()
        if taken:
            raise AdminError(f"{username!r} already has an app password labelled {label!r}")
        session.add(
            AppPassword(
                user=user,
                label=label,
                digest=digest(secret, password),
                mailboxes="\n".join(mailboxes),
                read_only=read_only,
            )
        )
        bump_epoch(session)
    return password


def list_for(db: Database, username: str | None = None) -> list[AppPasswordInfo]:
    with db.session() as session:
        query = select(AppPassword, User.name).join(User).order_by(User.name, AppPassword.label)
        if username is not None:
            query = query.where(User.id == _user(session, username).id)
        return [
            AppPasswordInfo(
                row.id,
                name,
                row.label,
                tuple(filter(None, row.mailboxes.split("\n"))),
                row.read_only,
                row.created_at,
                row.last_used_at,
                row.last_used_from,
            )
            for row, name in session.execute(query)
        ]


def revoke(db: Database, username: str, label: str) -> None:
    with db.session() as session:
        user = _user(session, username)
        row = session.execute(
            select(AppPassword).where(AppPassword.user_id == user.id, AppPassword.label == label)
        ).scalar_one_or_none()
        if row is None:
            raise AdminError(f"{username!r} has no app password labelled {label!r}")
        session.delete(row)
        bump_epoch(session)


def verify(db: Database, secret: bytes, username: str, password: str, address: str) -> Grant | None:
    """The grant for a valid app password of ``username`` (an enabled account), else None."""
    if not PATTERN.match(password):
        return None
    wanted = digest(secret, password)
    with db.session() as session:
        found = session.execute(
            select(AppPassword, User).join(User).where(AppPassword.digest == wanted)
        ).first()
        if found is None:
            return None
        row, user = found
        if not hmac.compare_digest(row.digest, wanted) or user.name != username or user.disabled:
            return None
        row.last_used_at = utcnow()
        row.last_used_from = address[:64] or None
        scope = frozenset(filter(None, row.mailboxes.split("\n"))) or None
        return Grant(user.id, user.name, scope, row.read_only, row.id)
