"""Server-side browser sessions: the cookie is a random token, the database holds its digest.

Contract:
- ``start(user_id, stage)`` makes a session and returns its token (256 bits
  from ``secrets``); only a SHA-256 digest of the token is stored, so a copy
  of the database opens no session.
- A session has a ``stage``: "password" (the password was right, the code is
  still due), "enroll" (two-factor login must be set up first) or "full". Only
  "full" opens account pages; the earlier stages open only the next login
  step, and expire after ``step_timeout`` seconds.
- ``advance(token, stage)`` moves a session to its next stage under a **new
  token and a new CSRF token** (the old token stops working at once), so a
  token seen before a login step is worthless after it.
- ``get(token)`` returns the session, or None when it is unknown, idle longer
  than ``idle_timeout`` or older than ``absolute_timeout``; expired rows are
  deleted when met and swept now and then.
- ``end_for_user(session, user_id, keep=...)`` ends an account's sessions in
  the caller's transaction: a password or two-factor change ends all others,
  disabling the account ends them all.
- ``open_credential``/``find_credential`` keep the optional password+code
  credentials of Basic-only WebDAV clients (stage "basic", bound to one
  client address, ended after an idle time); ``get`` never returns them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from davbox.db import Database
from davbox.db.models import User, WebSession

STAGES = ("password", "enroll", "full")
# A password+code credential sent by a Basic-only WebDAV client (davbox.access).
BASIC = "basic"


@dataclass(frozen=True)
class SessionInfo:
    id: int
    user_id: int
    username: str
    stage: str
    csrf: str
    pending_totp: str | None
    created_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def end_for_user(session: Session, user_id: int, keep: int | None = None) -> None:
    """End every session of an account but ``keep`` (call inside the changing transaction)."""
    query = delete(WebSession).where(WebSession.user_id == user_id)
    if keep is not None:
        query = query.where(WebSession.id != keep)
    session.execute(query)


class SessionStore:
    def __init__(
        self,
        db: Database,
        *,
        idle_timeout: float,
        absolute_timeout: float,
        step_timeout: float,
    ) -> None:
        self.db = db
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.step_timeout = step_timeout
        self._swept_at = 0.0

    def start(self, user_id: int, stage: str, address: str = "", user_agent: str = "") -> str:
        """A new session for a verified account; returns the cookie token."""
        assert stage in STAGES
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.db.session() as session:
            session.add(
                WebSession(
                    token_digest=_digest(token),
                    user_id=user_id,
                    stage=stage,
                    csrf=secrets.token_urlsafe(32),
                    created_at=now,
                    last_seen=now,
                    address=address[:64],
                    user_agent=user_agent[:256],
                )
            )
            if now - self._swept_at > 300:
                self._swept_at = now
                self._sweep(session, now)
        return token

    def get(self, token: str | None) -> SessionInfo | None:
        """The live session for a cookie token, else None (and an expired one is removed)."""
        if not token or len(token) > 128:
            return None
        now = time.time()
        with self.db.session() as session:
            found = session.execute(
                select(WebSession, User.name, User.disabled)
                .join(User, User.id == WebSession.user_id)
                .where(WebSession.token_digest == _digest(token), WebSession.stage != BASIC)
            ).first()
            if found is None:
                return None
            row, username, disabled = found
            if disabled or self._expired(row, now):
                session.delete(row)
                return None
            if now - row.last_seen > 10:  # spare the database a write per request
                row.last_seen = now
            return SessionInfo(
                row.id, row.user_id, username, row.stage, row.csrf, row.pending_totp, row.created_at
            )

    def advance(self, token: str, stage: str) -> str:
        """Move a session to ``stage`` under a new token and CSRF token; return the new token."""
        assert stage in STAGES
        new = secrets.token_urlsafe(32)
        with self.db.session() as session:
            changed = session.execute(
                update(WebSession)
                .where(WebSession.token_digest == _digest(token), WebSession.stage != BASIC)
                .values(
                    token_digest=_digest(new),
                    stage=stage,
                    csrf=secrets.token_urlsafe(32),
                    pending_totp=None,
                    last_seen=time.time(),
                )
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                raise LookupError("the session ended")
        return new

    def open_credential(self, key: str, user_id: int, address: str) -> None:
        """Remember a verified password+code credential (``key``: its keyed digest)."""
        now = time.time()
        with self.db.session() as session:
            session.add(
                WebSession(
                    token_digest=key,
                    user_id=user_id,
                    stage=BASIC,
                    csrf="",
                    created_at=now,
                    last_seen=now,
                    address=address[:64],
                    user_agent="",
                )
            )

    def find_credential(self, key: str, address: str, idle: float) -> int | None:
        """The account of a live password+code credential used from ``address``, else None.

        Unused for ``idle`` seconds, or older than ``absolute_timeout``, it ends.
        """
        now = time.time()
        with self.db.session() as session:
            row = session.execute(
                select(WebSession).where(WebSession.token_digest == key, WebSession.stage == BASIC)
            ).scalar_one_or_none()
            if row is None:
                return None
            if now - row.last_seen > idle or now - row.created_at > self.absolute_timeout:
                session.delete(row)
                return None
            if row.address != address[:64]:
                return None
            if now - row.last_seen > 10:
                row.last_seen = now
            return row.user_id

    def set_pending_totp(self, session_id: int, encrypted_secret: str | None) -> None:
        with self.db.session() as session:
            session.execute(
                update(WebSession)
                .where(WebSession.id == session_id)
                .values(pending_totp=encrypted_secret)
            )

    def end(self, token: str | None) -> None:
        if token:
            with self.db.session() as session:
                session.execute(delete(WebSession).where(WebSession.token_digest == _digest(token)))

    def _expired(self, row: WebSession, now: float) -> bool:
        if row.stage != "full":
            return now - row.created_at > self.step_timeout
        return now - row.last_seen > self.idle_timeout or now - row.created_at > (
            self.absolute_timeout
        )

    def sweep(self, now: float | None = None) -> int:
        """Remove the sessions that have timed out; how many went."""
        with self.db.session() as session:
            return self._sweep(session, time.time() if now is None else now)

    def _sweep(self, session: Session, now: float) -> int:
        return session.execute(  # type: ignore[attr-defined, no-any-return]
            delete(WebSession).where(
                ((WebSession.stage == "full") & (WebSession.last_seen < now - self.idle_timeout))
                | (WebSession.created_at < now - self.absolute_timeout)
                | (
                    WebSession.stage.in_(("password", "enroll"))
                    & (WebSession.created_at < now - self.step_timeout)
                )
            )
        ).rowcount
