"""Share links: a URL (and maybe a password) opening a folder or file to people without an account.

Contract:
- ``create`` makes a link with a token of 192 bits from ``secrets``; the
  token is returned once (and can be shown again to its creator: it is kept
  sealed with the installation's key). Links are found by a SHA-256 digest of
  the token, in one indexed lookup, so a wrong token costs the same as a
  right one. Link passwords are argon2id hashes.
- ``check_password`` remembers a password that opened a link for
  ``REMEMBER_PASSWORD`` seconds (in this process, under an HMAC of link id,
  password hash and password keyed by the installation's secret: no password
  is kept), so WebDAV clients, which send it with every request, cost one
  argon2 run, not one per request; ``remembered_password`` asks that memory
  only. A changed password (another hash) is never taken from it.
- Permissions: ``read`` (list and download), ``drop`` (upload new files only,
  see nothing) and ``write`` (read, upload, change and delete inside the
  link's folder). They act as the mailbox roles reader, dropper and member,
  so every policy applies to link users as to members.
- ``find(token)`` returns a link only while it is usable: not revoked, not
  expired, downloads not exhausted. Everything else is None, alike.
- ``change`` changes a link's permission, password, expiry, label or note
  under the same limits as ``create``; its token stays.
- ``count_download`` takes one download of a limited link atomically (one
  UPDATE with the limit in its WHERE), so parallel downloads cannot exceed it.
- Times are UTC. ``parse_when`` reads "5d", "12h", "30m", "2w" (from now) or
  an ISO date-time (UTC unless it carries an offset).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet
from sqlalchemy import select, update

from davbox import durations
from davbox.accounts import AdminError, _mailbox, _user
from davbox.db import Database
from davbox.db.models import Mailbox, ShareLink, User
from davbox.passwords import dummy_verify, hash_password, validate_new_password, verify_password

PERMISSIONS = {"read": "reader", "drop": "dropper", "write": "member"}
CODE_CHANNELS = ("", "mail", "webhook")
TOKEN_BYTES = 24  # 192 bits; token_urlsafe gives 32 characters
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
REMEMBER_PASSWORD = 300.0  # seconds, as auth.cache_ttl's default for account passwords
_opened_by: dict[bytes, float] = {}  # HMAC(link id, hash, password) -> monotonic expiry
_opened_lock = threading.Lock()


class LinkError(AdminError):
    """A refused link operation; ``str()`` is the message."""


@dataclass(frozen=True)
class Link:
    id: int
    mailbox: str
    mailbox_id: int
    storage_key: str
    path: str
    is_folder: bool
    permission: str
    has_password: bool
    label: str
    note: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    upload_until: datetime | None
    max_downloads: int | None
    downloads: int
    revoked_at: datetime | None
    recipient: str | None = None  # SecureTransfer: whom it was sent to or asked of
    code_channel: str = ""  # "" no one-time code; "mail" or "webhook" (davbox.codes)
    code_to: str | None = None  # where the code goes: a phone number for "webhook"

    @property
    def needs_code(self) -> bool:
        """Whether a one-time code must be entered before the link can be used."""
        return bool(self.code_channel)

    @property
    def role(self) -> str:
        return PERMISSIONS[self.permission]

    def state(self, now: datetime | None = None) -> str:
        """ "active", "revoked", "expired" or "exhausted"."""
        now = now or datetime.now(UTC)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and _aware(self.expires_at) <= now:
            return "expired"
        if self.max_downloads is not None and self.downloads >= self.max_downloads:
            return "exhausted"
        return "active"

    def accepts_uploads(self, now: datetime | None = None) -> bool:
        """Whether uploads are inside the link's upload window (if it has one)."""
        now = now or datetime.now(UTC)
        return self.upload_until is None or now < _aware(self.upload_until)


@dataclass(frozen=True)
class LinkChange:
    """What ``change`` alters in a link; fields left at their defaults stay as they are.

    ``set_password``/``set_expiry`` say whether ``password``/``expires_at``
    apply (None then removes the password or the expiry).
    """

    permission: str | None = None
    set_password: bool = False
    password: str | None = None
    set_expiry: bool = False
    expires_at: datetime | None = None
    label: str | None = None
    note: str | None = None

    def fields(self) -> tuple[str, ...]:
        """The names of the fields that change (for events: never their values)."""
        changed = [
            ("permission", self.permission is not None),
            ("password", self.set_password),
            ("expiry", self.set_expiry),
            ("label", self.label is not None),
            ("note", self.note is not None),
        ]
        return tuple(name for name, yes in changed if yes)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: they are UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _fernet(db: Database) -> Fernet:
    key = hashlib.sha256(b"davbox link token key\0" + db.server_secret()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def parse_duration(text: str) -> timedelta:
    """ "5d", "12h", "30m", "2w" -> timedelta; raise LinkError otherwise."""
    try:
        return durations.parse_duration(text)
    except ValueError as exc:
        raise LinkError(str(exc)) from None


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A moment: a duration from now ("5d") or an ISO date-time (UTC unless it has an offset)."""
    now = now or datetime.now(UTC)
    if durations.is_duration(text):
        return now + parse_duration(text)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LinkError(
            f"cannot read {text!r} as a time; use e.g. 2026-12-31T17:00 (UTC) or 5d"
        ) from None
    return _aware(moment)


def _info(row: ShareLink, mailbox: Mailbox, creator: str | None) -> Link:
    return Link(
        id=row.id,
        mailbox=mailbox.name,
        mailbox_id=mailbox.id,
        storage_key=mailbox.storage_key,
        path=row.path,
        is_folder=row.is_folder,
        permission=row.permission,
        has_password=row.password_hash is not None,
        label=row.label,
        note=row.note,
        created_by=creator,
        created_at=_aware(row.created_at),
        expires_at=_aware(row.expires_at) if row.expires_at else None,
        upload_until=_aware(row.upload_until) if row.upload_until else None,
        max_downloads=row.max_downloads,
        downloads=row.downloads,
        revoked_at=row.revoked_at,
        recipient=row.recipient,
        code_channel=row.code_channel or "",
        code_to=row.code_to,
    )


def _query():  # type: ignore[no-untyped-def]
    return (
        select(ShareLink, Mailbox, User.name)
        .join(Mailbox, Mailbox.id == ShareLink.mailbox_id)
        .outerjoin(User, User.id == ShareLink.created_by)
    )


def create(
    db: Database,
    *,
    mailbox: str,
    path: str,
    is_folder: bool,
    permission: str,
    created_by: str | None = None,
    password: str | None = None,
    expires_at: datetime | None = None,
    max_downloads: int | None = None,
    upload_window: timedelta | None = None,
    label: str = "",
    note: str = "",
    recipient: str | None = None,
    code_channel: str = "",
    code_to: str | None = None,
    now: datetime | None = None,
) -> tuple[Link, str]:
    """Store a new link; return it and its token (the caller checked path and policy).

    ``recipient``, ``code_channel`` and ``code_to`` are SecureTransfer's
    (``davbox.transfer``): the caller has checked the addresses.
    """
    now = now or datetime.now(UTC)
    if permission not in PERMISSIONS:
        raise LinkError(f"unknown permission {permission!r}; use read, drop or write")
    if permission in ("drop", "write") and not is_folder:
        raise LinkError(f"a {permission} link needs a folder, not a file")
    if expires_at is not None and expires_at <= now:
        raise LinkError("the expiry time has passed already")
    if max_downloads is not None and max_downloads < 1:
        raise LinkError("--max-downloads must be at least 1")
    if upload_window is not None and permission == "read":
        raise LinkError("an upload window is for drop and write links")
    if password is not None:
        try:
            validate_new_password(password)
        except ValueError as exc:
            raise LinkError(f"link password: {exc}") from None
    if code_channel not in CODE_CHANNELS:
        raise LinkError(f"unknown code channel {code_channel!r}; use mail or webhook")
    if code_channel and not (code_to or recipient):
        raise LinkError("a one-time code needs someone to send it to")
    if len(label) > 256 or len(note) > 4000:
        raise LinkError("the label is limited to 256 characters, the note to 4000")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with db.session() as session:
        box = _mailbox(session, mailbox)
        creator = _user(session, created_by) if created_by else None
        row = ShareLink(
            token_digest=digest(token),
            token_sealed=_fernet(db).encrypt(token.encode()).decode(),
            mailbox_id=box.id,
            path=path,
            is_folder=is_folder,
            permission=permission,
            password_hash=hash_password(password) if password is not None else None,
            created_by=creator.id if creator else None,
            label=label,
            note=note,
            recipient=recipient,
            code_channel=code_channel,
            code_to=code_to,
            created_at=now,
            expires_at=expires_at,
            upload_until=now + upload_window if upload_window else None,
            max_downloads=max_downloads,
            downloads=0,
        )
        session.add(row)
        session.flush()
        link = _info(row, box, creator.name if creator else None)
    return link, token


def list_links(
    db: Database, *, mailbox: str | None = None, created_by: str | None = None
) -> list[Link]:
    query = _query().order_by(ShareLink.id)
    if mailbox is not None:
        query = query.where(Mailbox.name == mailbox)
    if created_by is not None:
        query = query.where(User.name == created_by)
    with db.session() as session:
        return [_info(row, box, creator) for row, box, creator in session.execute(query)]


def get(db: Database, link_id: int) -> Link:
    with db.session() as session:
        found = session.execute(_query().where(ShareLink.id == link_id)).first()
    if found is None:
        raise LinkError(f"there is no link {link_id}")
    return _info(*found)


def token_of(db: Database, link_id: int) -> str:
    """The token of a link, for its creator to copy the URL again."""
    with db.session() as session:
        row = session.get(ShareLink, link_id)
        if row is None:
            raise LinkError(f"there is no link {link_id}")
        return _fernet(db).decrypt(row.token_sealed.encode()).decode()


def change(db: Database, link_id: int, what: LinkChange, now: datetime | None = None) -> Link:
    """Change a link (the caller checked who asks and the policies).

    The same limits as for a new link hold: drop and write need a folder, a
    future expiry, a strong password, label and note lengths.
    """
    now = now or datetime.now(UTC)
    if what.permission is not None and what.permission not in PERMISSIONS:
        raise LinkError(f"unknown permission {what.permission!r}; use read, drop or write")
    if what.set_expiry and what.expires_at is not None and what.expires_at <= now:
        raise LinkError("the expiry time has passed already")
    if what.set_password and what.password is not None:
        try:
            validate_new_password(what.password)
        except ValueError as exc:
            raise LinkError(f"link password: {exc}") from None
    if len(what.label or "") > 256 or len(what.note or "") > 4000:
        raise LinkError("the label is limited to 256 characters, the note to 4000")
    with db.session() as session:
        row = session.get(ShareLink, link_id)
        if row is None:
            raise LinkError(f"there is no link {link_id}")
        if what.permission is not None:
            if what.permission in ("drop", "write") and not row.is_folder:
                raise LinkError(f"a {what.permission} link needs a folder, not a file")
            row.permission = what.permission
        if what.set_password:
            row.password_hash = hash_password(what.password) if what.password else None
        if what.set_expiry:
            row.expires_at = what.expires_at
        if what.label is not None:
            row.label = what.label
        if what.note is not None:
            row.note = what.note
    return get(db, link_id)


def revoke(db: Database, link_id: int) -> Link:
    with db.session() as session:
        row = session.get(ShareLink, link_id)
        if row is None:
            raise LinkError(f"there is no link {link_id}")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
    return get(db, link_id)


def find(db: Database, token: str, now: datetime | None = None) -> Link | None:
    """The usable link of a token, else None (unknown, revoked, expired, exhausted alike)."""
    key = digest(token) if _TOKEN_RE.match(token) else digest("\0" + token)
    with db.session() as session:
        found = session.execute(_query().where(ShareLink.token_digest == key)).first()
    if found is None:
        return None
    link = _info(*found)
    return link if link.state(now) == "active" else None


def check_password(db: Database, link: Link, password: str) -> bool:
    """Whether ``password`` opens the link (always True for a link without password)."""
    if not link.has_password:
        return True
    hashed, key = _password_key(db, link, password)
    if hashed is None:
        dummy_verify(password)
        return False
    if not verify_password(hashed, password):
        return False
    now = time.monotonic()
    with _opened_lock:
        if len(_opened_by) > 10_000:
            for old in [k for k, until in _opened_by.items() if until <= now]:
                del _opened_by[old]
        _opened_by[key] = now + REMEMBER_PASSWORD
    return True


def remembered_password(db: Database, link: Link, password: str) -> bool:
    """Whether ``password`` opened the link, as its password is now, in the last minutes."""
    hashed, key = _password_key(db, link, password)
    return hashed is not None and _opened_by.get(key, 0.0) > time.monotonic()


def _password_key(db: Database, link: Link, password: str) -> tuple[str | None, bytes]:
    with db.session() as session:
        hashed = session.execute(
            select(ShareLink.password_hash).where(ShareLink.id == link.id)
        ).scalar_one_or_none()
    material = f"{link.id}\0{hashed}\0{password}".encode()
    return hashed, hmac.new(db.server_secret(), material, hashlib.sha256).digest()


def count_download(db: Database, link_id: int) -> bool:
    """Take one download; False when the link's downloads are used up."""
    with db.session() as session:
        taken = session.execute(
            update(ShareLink)
            .where(
                ShareLink.id == link_id,
                (ShareLink.max_downloads.is_(None))
                | (ShareLink.downloads < ShareLink.max_downloads),
            )
            .values(downloads=ShareLink.downloads + 1)
        )
        return taken.rowcount == 1  # type: ignore[attr-defined]
