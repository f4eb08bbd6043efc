"""Who may use a share link in the browser, and what a path below it means.

Contract:
- ``LinkGate.find(token)`` is all the work done for a token before it is
  known to be good: one indexed lookup (``links.find``). Unknown, revoked,
  expired and used-up tokens all give None alike, and the pages answer each
  with the one 404 page. Nothing here logs or returns the token.
- A link with a password is opened by the password (``ShareService.open``,
  throttled) and then by a remembered-password cookie ``__Host-davbox-link-<id>``
  (Secure, HttpOnly, SameSite=Strict, Path=/; set by the pages). Its value is
  signed with the installation secret (itsdangerous, salted for this use)
  and binds the link id and a fingerprint of the link's password hash, so a
  changed password or another link never accepts it. It stops working after
  ``IDLE`` seconds unused (each use re-signs it) and ``LIFETIME`` seconds
  after the password was given. The token is still looked up on every
  request: revocation and expiry act at once.
- A link sent to a person with a one-time code (SecureTransfer) is opened by
  the code (``davbox.codes``), then by a cookie ``__Host-davbox-code-<id>``
  signed like the password one (its own salt) binding the link id, valid
  ``LIFETIME`` seconds after the code was entered.
- ``locate(link, sub)`` maps a path below the link ("" for the link itself)
  to an ``Item``, or None for anything outside the link: "." and ".." parts,
  NUL, symlinks anywhere on the way, anything below a file link, and things
  that are neither regular files nor folders.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from davbox import links
from davbox.access import MailboxAccess
from davbox.db import Database
from davbox.db.models import ShareLink
from davbox.links import Link
from davbox.policies.base import Principal
from davbox.providers.storage.filesystem import FilesystemStorage

COOKIE_PREFIX = "__Host-davbox-link-"
CODE_COOKIE_PREFIX = "__Host-davbox-code-"
IDLE = 3600  # a remembered password unused this long must be given again
LIFETIME = 12 * 3600  # and always this long after it was given
RESIGN_AFTER = 300  # re-sign (extend the idle time) at most every five minutes


@dataclass(frozen=True)
class Visit:
    """A usable link opened by this request (its password, if any, given)."""

    token: str
    link: Link
    principal: Principal
    box: MailboxAccess
    context: dict[str, Any]  # event fields of the request: request_id, client

    @property
    def base(self) -> str:
        return f"/s/{self.token}"


@dataclass(frozen=True)
class Item:
    """A file or folder inside a link."""

    rel: str  # path inside the mailbox
    sub: str  # path below the link ("" for the link's own folder or file)
    fs: Path
    name: str
    is_dir: bool
    size: int
    modified: datetime


class LinkGate:
    def __init__(self, db: Database, storage: FilesystemStorage) -> None:
        self.db = db
        self.storage = storage
        self._signer = URLSafeTimedSerializer(db.server_secret(), salt="davbox link password")
        self._code_signer = URLSafeTimedSerializer(db.server_secret(), salt="davbox link code")
        self._secret = db.server_secret()

    def find(self, token: str) -> Link | None:
        return links.find(self.db, token)

    # -- the remembered password ------------------------------------------------

    @staticmethod
    def cookie_name(link: Link) -> str:
        return f"{COOKIE_PREFIX}{link.id}"

    def _fingerprint(self, link: Link) -> str:
        with self.db.session() as session:
            hashed = session.execute(
                select(ShareLink.password_hash).where(ShareLink.id == link.id)
            ).scalar_one_or_none()
        material = f"{link.id}\0{hashed or ''}".encode()
        return hmac.new(self._secret, material, hashlib.sha256).hexdigest()[:32]

    def remember(self, link: Link) -> str:
        """The cookie value for a link whose password was just given."""
        return self._signer.dumps([link.id, self._fingerprint(link), int(time.time())])

    def remembered(self, link: Link, value: str | None) -> tuple[bool, str | None]:
        """(whether ``value`` opens ``link``, a re-signed value to set or None)."""
        if not value:
            return False, None
        try:
            payload, signed = self._signer.loads(value, max_age=IDLE, return_timestamp=True)
        except BadSignature:  # also SignatureExpired (idle too long)
            return False, None
        if not (isinstance(payload, list) and len(payload) == 3):
            return False, None
        link_id, fingerprint, given = payload
        now = time.time()
        if (
            link_id != link.id
            or not isinstance(fingerprint, str)
            or not isinstance(given, int)
            or now - given > LIFETIME
            or not hmac.compare_digest(fingerprint, self._fingerprint(link))
        ):
            return False, None
        if now - signed.timestamp() < RESIGN_AFTER:
            return True, None
        return True, self._signer.dumps([link.id, fingerprint, given])

    # -- the one-time code ----------------------------------------------------------

    @staticmethod
    def code_cookie_name(link: Link) -> str:
        return f"{CODE_COOKIE_PREFIX}{link.id}"

    def code_given(self, link: Link) -> str:
        """The cookie value for a link whose one-time code was just entered."""
        return self._code_signer.dumps([link.id])

    def code_remembered(self, link: Link, value: str | None) -> bool:
        if not value:
            return False
        try:
            payload = self._code_signer.loads(value, max_age=LIFETIME)
        except BadSignature:
            return False
        return payload == [link.id]

    # -- paths below the link -----------------------------------------------------

    def locate(self, link: Link, sub: str) -> Item | None:
        parts = [p for p in sub.split("/") if p]
        if any(p in (".", "..") or "\x00" in p for p in parts):
            return None
        if parts and not link.is_folder:
            return None
        base = [p for p in link.path.split("/") if p]
        top = self.storage.mailbox_dir(link.storage_key)
        path = top
        st: os.stat_result | None = None
        for part in [*base, *parts]:
            path = path / part
            try:
                st = os.lstat(path)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                return None
        if st is None:
            st = os.lstat(top)
        is_dir = stat.S_ISDIR(st.st_mode)
        if not is_dir and not stat.S_ISREG(st.st_mode):
            return None
        if not parts and is_dir != link.is_folder:
            return None  # the link's target changed kind since it was made
        return Item(
            rel="/" + "/".join([*base, *parts]),
            sub="/".join(parts),
            fs=path,
            name=path.name if (base or parts) else "",  # a mailbox's name is not shown
            is_dir=is_dir,
            size=self.storage.content_size(st.st_size) if not is_dir else 0,
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
        )

    def children(self, folder: Item) -> list[Item]:
        """The files and folders directly in ``folder`` (folders first, then by name)."""
        found: list[Item] = []
        prefix = folder.sub + "/" if folder.sub else ""
        rel = folder.rel.rstrip("/")
        with os.scandir(folder.fs) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                if not is_dir and not stat.S_ISREG(st.st_mode):
                    continue
                found.append(
                    Item(
                        rel=f"{rel}/{entry.name}",
                        sub=prefix + entry.name,
                        fs=Path(entry.path),
                        name=entry.name,
                        is_dir=is_dir,
                        size=0 if is_dir else self.storage.content_size(st.st_size),
                        modified=datetime.fromtimestamp(st.st_mtime, UTC),
                    )
                )
        found.sort(key=lambda item: (not item.is_dir, item.name.casefold(), item.name))
        return found
