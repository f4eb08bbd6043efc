"""Making and opening share links: the one service the CLI, web pages, OCS API and WebDAV use.

Contract:
- ``create(creator, target, permission, ...)`` checks that the target exists
  (a folder, or a file for read links), that the creator may share it (the
  share right of their mailbox role; ``creator=None`` is an administrator at
  the command line) and that no ``links`` policy refuses (password required,
  longest expiry, allowed permissions); then stores it and emits
  ``LinkCreated``. Refusals raise ``LinkError`` with the reason: its
  subclasses ``LinkRefused`` (the share right or a policy said no; ``status``
  as the policy decided, 403 mostly) and ``TargetNotFound`` (no such mailbox
  for the creator, or nothing at the path). The share right is judged before
  the path is looked at, so a caller without it (a dropper) learns nothing
  about which names exist.
- ``update(actor, link_id, change)`` changes a link's permission, password,
  expiry, label or note; the changed link must pass the same checks as a new
  one (share right, ``links`` policies), then ``LinkChanged`` is emitted
  naming the fields that changed (never their values).
- ``revoke`` and ``update`` act for the link's creator, a manager of its
  mailbox, or an administrator (``actor=None``); for anyone else the link does
  not exist.
- Every change is an event with the actor (``actor_details``) and, when
  ``request`` (``request_context`` of the HTTP request) is given, its request
  id, client address and user agent; a refusal by the share right or a
  ``links`` policy is an ``AccessRefused`` event (operation "share").
- ``open(token, password, address)`` returns an ``Opened`` link, or raises
  ``LinkNotFound`` (unknown, revoked, expired and exhausted tokens alike: the
  callers answer all with the same 404), ``LinkPasswordRequired`` (no or a
  wrong password: ``wrong`` tells which) or ``Throttled``. Only password
  guesses are counted (per link and per client address, by the login
  limiter); a wrong token costs one indexed lookup and is not counted, since
  192-bit tokens cannot be guessed. A password that opened the link in the
  last minutes (``links.remembered_password``) is taken without an argon2
  run and without the limiter, as cached account credentials are: someone
  else's guessing does not lock out those who have the password.
- ``principal_for(link)`` and ``mailboxes_for(link)`` give the identity under
  which a link's requests are judged: kind "link", the link's permission as
  its mailbox role, so every policy applies as to members.
"""

from __future__ import annotations

import os
import stat
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from davbox import links
from davbox.access import AccessService, MailboxAccess
from davbox.db import Database
from davbox.db.models import Mailbox
from davbox.events import (
    AccessRefused,
    EventBus,
    LinkChanged,
    LinkCreated,
    LinkRevoked,
    actor_details,
)
from davbox.links import Link, LinkChange, LinkError
from davbox.policies.base import LinkRequest, Operation, Principal
from davbox.policies.engine import PolicyEngine
from davbox.providers.storage.filesystem import FilesystemStorage


class LinkNotFound(Exception):
    """No usable link for this token (unknown, revoked, expired or used up)."""


class LinkPasswordRequired(Exception):
    """The link has a password and none, or a wrong one, was given."""

    def __init__(self, wrong: bool) -> None:
        super().__init__("this link needs its password" if not wrong else "wrong link password")
        self.wrong = wrong


class LinkRefused(LinkError):
    """The share right or a ``links`` policy refused; ``status`` is the decision's."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.status = status


class TargetNotFound(LinkError):
    """The creator has no such mailbox, or nothing is at the path."""


@dataclass(frozen=True)
class Opened:
    """A usable link whose password (if any) was given."""

    link: Link
    principal: Principal
    mailboxes: dict[str, MailboxAccess]


class ShareService:
    def __init__(
        self,
        db: Database,
        storage: FilesystemStorage,
        engine: PolicyEngine,
        access: AccessService,
        events: EventBus,
    ) -> None:
        self.db = db
        self.storage = storage
        self.engine = engine
        self.access = access
        self.events = events

    # -- making links -------------------------------------------------------

    def create(
        self,
        creator: Principal | None,
        target: str,
        permission: str,
        *,
        password: str | None = None,
        expires_at: datetime | None = None,
        max_downloads: int | None = None,
        upload_window: timedelta | None = None,
        label: str = "",
        note: str = "",
        recipient: str | None = None,
        code_channel: str = "",
        code_to: str | None = None,
        client: str = "",
        request: dict[str, Any] | None = None,
    ) -> tuple[Link, str]:
        """Make a link to ``MAILBOX/PATH``; return it and its token (shown once).

        ``recipient``/``code_channel``/``code_to``: see ``davbox.transfer``; a
        one-time code satisfies a policy's ``require_password``.
        """
        now = datetime.now(UTC)
        mailbox, path = split_target(target)
        box = self._mailbox(creator, mailbox)
        principal = creator or Principal("admin", "admin")
        context = _context(principal, client, request)
        self._check(
            principal,
            box,
            path,
            permission,
            password is not None,
            expires_at,
            now,
            context,
            has_code=bool(code_channel),
        )
        is_folder = self._kind_of(box, path)
        link, token = links.create(
            self.db,
            mailbox=box.name,
            path=path,
            is_folder=is_folder,
            permission=permission,
            created_by=creator.name if creator else None,
            password=password,
            expires_at=expires_at,
            max_downloads=max_downloads,
            upload_window=upload_window,
            label=label,
            note=note,
            recipient=recipient,
            code_channel=code_channel,
            code_to=code_to,
            now=now,
        )
        self.events.emit(
            LinkCreated(
                **context,
                mailbox=box.name,
                path=path,
                link_id=link.id,
                permission=permission,
            )
        )
        return link, token

    def revoke(
        self,
        actor: Principal | None,
        link_id: int,
        client: str = "",
        request: dict[str, Any] | None = None,
    ) -> Link:
        """Revoke a link (its creator, a manager of its mailbox, or an administrator)."""
        link = links.get(self.db, link_id)
        if not self.may_manage(actor, link):
            raise LinkError(f"there is no link {link_id}")
        link = links.revoke(self.db, link_id)
        self.events.emit(
            LinkRevoked(
                **_context(actor or Principal("admin", "admin"), client, request),
                mailbox=link.mailbox,
                path=link.path,
                link_id=link.id,
            )
        )
        return link

    def update(
        self,
        actor: Principal | None,
        link_id: int,
        change: LinkChange,
        client: str = "",
        request: dict[str, Any] | None = None,
    ) -> Link:
        """Change a usable link; it must then pass the checks a new link would."""
        now = datetime.now(UTC)
        link = links.get(self.db, link_id)
        if link.state(now) != "active" or not self.may_manage(actor, link):
            raise LinkError(f"there is no link {link_id}")
        box = self._mailbox(actor, link.mailbox)
        principal = actor or Principal("admin", "admin")
        context = _context(principal, client, request)
        self._check(
            principal,
            box,
            link.path,
            change.permission or link.permission,
            change.password is not None if change.set_password else link.has_password,
            change.expires_at if change.set_expiry else link.expires_at,
            now,
            context,
            has_code=link.needs_code,
        )
        link = links.change(self.db, link_id, change, now)
        self.events.emit(
            LinkChanged(
                **context,
                mailbox=link.mailbox,
                path=link.path,
                link_id=link.id,
                changed=change.fields(),
                permission=link.permission,
            )
        )
        return link

    def may_manage(self, actor: Principal | None, link: Link) -> bool:
        """Whether ``actor`` may see, change and revoke ``link`` (``None``: an administrator)."""
        if actor is None or link.created_by == actor.name:
            return True
        box = self.access.mailboxes_for(actor).get(link.mailbox)
        return box is not None and "manager" in box.roles

    def _check(
        self,
        principal: Principal,
        box: MailboxAccess,
        path: str,
        permission: str,
        has_password: bool,
        expires_at: datetime | None,
        now: datetime,
        context: dict[str, Any],
        *,
        has_code: bool = False,
    ) -> None:
        """The share right and the ``links`` policies; raise ``LinkRefused`` (an event too)."""
        decision = self.engine.check_link(
            LinkRequest(
                principal,
                box.name,
                path,
                box.roles,
                permission,
                has_password=has_password,
                expires_in=expires_at - now if expires_at else None,
                has_code=has_code,
            )
        )
        if not decision.allowed:
            self.events.emit(
                AccessRefused(
                    **context,
                    mailbox=box.name,
                    path=path,
                    operation=Operation.SHARE.value,
                    status=decision.status,
                    rule=decision.rule,
                    reason=decision.reason,
                )
            )
            raise LinkRefused(decision.reason, decision.status)

    def _mailbox(self, creator: Principal | None, name: str) -> MailboxAccess:
        if creator is not None:
            box = self.access.mailboxes_for(creator).get(name)
            if box is None:
                raise TargetNotFound(f"you have no mailbox {name!r}")
            return box
        with self.db.session() as session:
            row = session.execute(select(Mailbox).where(Mailbox.name == name)).scalar_one_or_none()
            if row is None:
                raise TargetNotFound(f"there is no mailbox {name!r}")
            return MailboxAccess(row.id, row.name, row.storage_key, frozenset())

    def _kind_of(self, box: MailboxAccess, path: str) -> bool:
        """True for a folder, False for a file; LinkError when nothing is there."""
        parts = [p for p in path.split("/") if p]
        try:
            st = os.lstat(self.storage.mailbox_dir(box.storage_key).joinpath(*parts))
        except OSError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            return True
        if st is not None and stat.S_ISREG(st.st_mode):
            return False
        raise TargetNotFound(f"there is no file or folder {path!r} in mailbox {box.name!r}")

    # -- using links ----------------------------------------------------------

    def open(self, token: str, password: str | None, address: str) -> Opened:
        link = links.find(self.db, token)
        if link is None:
            raise LinkNotFound()
        if link.has_password:
            if not password:
                raise LinkPasswordRequired(wrong=False)
            if links.remembered_password(self.db, link, password):
                return Opened(link, self.principal_for(link), self.mailboxes_for(link))
            throttle = self.access.throttle
            keys = [f"link:{link.id}", f"address:{address}"]
            pending = throttle.attempt(keys) if throttle is not None else {}
            if not links.check_password(self.db, link, password):
                raise LinkPasswordRequired(wrong=True)
            if throttle is not None:
                throttle.succeeded(keys[0], pending)
        return Opened(link, self.principal_for(link), self.mailboxes_for(link))

    @staticmethod
    def principal_for(link: Link) -> Principal:
        return Principal(
            "link",
            f"link-{link.id}",
            read_only=link.permission == "read",
            second_factor=True,
            email=link.recipient,
        )

    @staticmethod
    def mailboxes_for(link: Link) -> dict[str, MailboxAccess]:
        role = frozenset({link.role})
        return {link.mailbox: MailboxAccess(link.mailbox_id, link.mailbox, link.storage_key, role)}


def _context(principal: Principal, client: str, request: dict[str, Any] | None) -> dict[str, Any]:
    """Event fields for a link change: the principal as actor, the request's id and client."""
    request = request or {}
    return {
        "request_id": request.get("request_id", ""),
        "client": request.get("client", client),
        "user_agent": request.get("user_agent", ""),
        **actor_details(principal),
    }


def split_target(target: str) -> tuple[str, str]:
    """ "MAILBOX/path/inside" -> ("MAILBOX", "/path/inside"); NFC, no "." or ".." parts."""
    target = unicodedata.normalize("NFC", target.strip())
    parts = [p for p in target.split("/") if p]
    if not parts:
        raise LinkError("name a mailbox and optionally a path: MAILBOX/PATH")
    if any(p in (".", "..") or "\x00" in p for p in parts):
        raise LinkError("paths may not contain '.' or '..' parts")
    return parts[0], "/" + "/".join(parts[1:])
