"""Administration of users, groups, mailboxes and grants (used by the CLI and UI).

Contract: every function works in one transaction, raises ``AdminError`` with a
sentence fit for an admin's terminal for unknown names, duplicates, bad roles
and weak passwords, and bumps the access epoch so running servers see the
change within ``auth.refresh_interval`` seconds. Deleting a mailbox deletes its
folder only after the database row is gone.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from davbox.db import Database, bump_epoch
from davbox.db.models import Group, Mailbox, MailboxGrant, Role, User
from davbox.passwords import hash_password, validate_new_password
from davbox.sessions import end_for_user

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MAILBOX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
ROLES = [role.value for role in Role]


class AdminError(Exception):
    """A refused administrative action; ``str()`` is the message for the admin."""


@dataclass(frozen=True)
class MailboxInfo:
    name: str
    storage_key: str
    description: str
    grants: list[tuple[str, str]]  # (user or @group, role)


def _check_name(kind: str, name: str, pattern: re.Pattern[str] = NAME_RE) -> None:
    if not pattern.match(name) or name.endswith((".", " ")):
        raise AdminError(
            f"invalid {kind} name {name!r}: use letters, digits and . _ - @"
            + (" or spaces" if pattern is MAILBOX_RE else "")
            + ", at most 128 characters, not ending in a dot or space"
        )


def _user(session: Session, name: str) -> User:
    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None:
        raise AdminError(f"no user named {name!r}")
    return user


def _group(session: Session, name: str) -> Group:
    group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
    if group is None:
        raise AdminError(f"no group named {name!r}")
    return group


def _mailbox(session: Session, name: str) -> Mailbox:
    box = session.execute(select(Mailbox).where(Mailbox.name == name)).scalar_one_or_none()
    if box is None:
        raise AdminError(f"no mailbox named {name!r}")
    return box


def _role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise AdminError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}") from None


# --- users --------------------------------------------------------------------


def add_user(
    db: Database,
    name: str,
    password: str,
    *,
    email: str | None = None,
    display_name: str = "",
    is_admin: bool = False,
) -> None:
    _check_name("user", name)
    try:
        validate_new_password(password)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    with db.session() as session:
        if session.execute(select(User.id).where(User.name == name)).first():
            raise AdminError(f"a user named {name!r} already exists")
        session.add(
            User(
                name=name,
                password_hash=hash_password(password),
                email=email,
                display_name=display_name,
                is_admin=is_admin,
            )
        )
        bump_epoch(session)


def list_users(db: Database) -> list[User]:
    with db.session() as session:
        users = list(session.execute(select(User).order_by(User.name)).scalars())
        for user in users:
            _ = user.groups  # load while the session is open
        return users


def set_disabled(db: Database, name: str, disabled: bool) -> None:
    """Disable or enable an account; disabling ends its web sessions.

    Ended, not just refused while disabled: enabling the account again must
    not bring back a session opened before (perhaps by whoever it was
    disabled for).
    """
    with db.session() as session:
        user = _user(session, name)
        user.disabled = disabled
        if disabled:
            end_for_user(session, user.id)
        bump_epoch(session)


def set_password(db: Database, name: str, password: str, keep_session: int | None = None) -> None:
    """Change an account's password; its web sessions end (but ``keep_session``)."""
    try:
        validate_new_password(password)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    with db.session() as session:
        user = _user(session, name)
        if user.source != "local":
            raise AdminError(
                f"the account {name!r} comes from {user.source.upper()}; its password is"
                " changed in the directory, not here"
            )
        user.password_hash = hash_password(password)
        end_for_user(session, user.id, keep=keep_session)
        bump_epoch(session)


def source_of(db: Database, name: str) -> str:
    """Where an account's password lives: "local" (davbox) or an identity provider ("ldap")."""
    with db.session() as session:
        return _user(session, name).source


def remove_user(db: Database, name: str) -> None:
    with db.session() as session:
        session.delete(_user(session, name))
        bump_epoch(session)


def count_users(db: Database) -> int:
    with db.session() as session:
        return len(session.execute(select(User.id)).all())


# --- groups -------------------------------------------------------------------


def add_group(db: Database, name: str) -> None:
    _check_name("group", name)
    with db.session() as session:
        if session.execute(select(Group.id).where(Group.name == name)).first():
            raise AdminError(f"a group named {name!r} already exists")
        session.add(Group(name=name))
        bump_epoch(session)


def remove_group(db: Database, name: str) -> None:
    with db.session() as session:
        session.delete(_group(session, name))
        bump_epoch(session)


def change_group_members(db: Database, name: str, add: list[str], remove: list[str]) -> list[str]:
    """Add and remove members; return the member names afterwards."""
    with db.session() as session:
        group = _group(session, name)
        for user_name in add:
            user = _user(session, user_name)
            if user not in group.members:
                group.members.append(user)
        for user_name in remove:
            user = _user(session, user_name)
            if user not in group.members:
                raise AdminError(f"user {user_name!r} is not a member of group {name!r}")
            group.members.remove(user)
        bump_epoch(session)
        return [user.name for user in group.members]


def list_groups(db: Database) -> list[tuple[str, list[str]]]:
    with db.session() as session:
        groups = session.execute(select(Group).order_by(Group.name)).scalars()
        return [(group.name, [user.name for user in group.members]) for group in groups]


# --- mailboxes ----------------------------------------------------------------


def create_mailbox(db: Database, name: str, description: str = "") -> str:
    """Create a mailbox; return its storage key (the folder name under the storage root)."""
    _check_name("mailbox", name, MAILBOX_RE)
    with db.session() as session:
        if session.execute(select(Mailbox.id).where(Mailbox.name == name)).first():
            raise AdminError(f"a mailbox named {name!r} already exists")
        key = secrets.token_hex(16)
        session.add(Mailbox(name=name, description=description, storage_key=key))
        bump_epoch(session)
        return key


def remove_mailbox(db: Database, name: str) -> str:
    """Delete the mailbox row; return its storage key so the caller can remove the folder."""
    with db.session() as session:
        box = _mailbox(session, name)
        key = box.storage_key
        session.delete(box)
        bump_epoch(session)
        return key


def list_mailboxes(db: Database) -> list[MailboxInfo]:
    with db.session() as session:
        result = []
        for box in session.execute(select(Mailbox).order_by(Mailbox.name)).scalars():
            grants = sorted(
                (g.user.name if g.user else f"@{g.group.name}", g.role.value)  # type: ignore[union-attr]
                for g in box.grants
            )
            result.append(MailboxInfo(box.name, box.storage_key, box.description, grants))
        return result


def grant(db: Database, mailbox: str, principal: str, role: str) -> None:
    """Give ``principal`` (a user name or ``@group``) ``role`` in ``mailbox`` (replacing any)."""
    wanted = _role(role)
    with db.session() as session:
        box = _mailbox(session, mailbox)
        existing = _find_grant(session, box, principal)
        if existing is not None:
            existing.role = wanted
        elif principal.startswith("@"):
            session.add(
                MailboxGrant(mailbox=box, group=_group(session, principal[1:]), role=wanted)
            )
        else:
            session.add(MailboxGrant(mailbox=box, user=_user(session, principal), role=wanted))
        bump_epoch(session)


def revoke(db: Database, mailbox: str, principal: str) -> None:
    with db.session() as session:
        box = _mailbox(session, mailbox)
        existing = _find_grant(session, box, principal)
        if existing is None:
            raise AdminError(f"{principal!r} has no role in mailbox {mailbox!r}")
        session.delete(existing)
        bump_epoch(session)


def _find_grant(session: Session, box: Mailbox, principal: str) -> MailboxGrant | None:
    if principal.startswith("@"):
        group = _group(session, principal[1:])
        clause = MailboxGrant.group_id == group.id
    else:
        clause = MailboxGrant.user_id == _user(session, principal).id
    return session.execute(
        select(MailboxGrant).where(MailboxGrant.mailbox_id == box.id, clause)
    ).scalar_one_or_none()
