"""Nextcloud Login Flow v2: a sync client gets an app password through a browser login.

1. The client POSTs ``/index.php/login/v2`` and gets a login URL and a poll
   token (both random, 256 bits, from ``secrets``; the database keeps only
   their SHA-256 digests). It opens the login URL in a browser.
2. There the person logs in as on the web (password and, where required,
   the authenticator code) and grants access (``grant``).
3. The client polls ``/index.php/login/v2/poll`` with its token: 404 until
   granted, then, once, the server URL, the account name and a new app
   password (``poll``). The app password is made at that moment and handed
   out in that one answer; it is never stored in clear.

Contract: a flow lives 20 minutes; a used or expired one is gone (404);
polls of an unknown token and of a pending flow look the same. The app
password is labelled after the client and the date, and is a full one (the
person can limit or revoke it on their account page).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from davbox import app_passwords
from davbox.accounts import AdminError
from davbox.db import Database
from davbox.db.models import LoginFlow

LIFETIME = 20 * 60
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9._ -]+")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Pending:
    id: int
    client: str
    granted_to: str | None


@dataclass(frozen=True)
class Granted:
    username: str
    app_password: str
    label: str


class LoginFlows:
    def __init__(self, db: Database) -> None:
        self.db = db

    def start(self, client: str, now: float | None = None) -> tuple[str, str]:
        """A new flow: (login token for the browser, poll token for the client)."""
        now = time.time() if now is None else now
        login, poll = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.db.session() as session:
            session.execute(delete(LoginFlow).where(LoginFlow.expires_at <= now))
            session.add(
                LoginFlow(
                    login_digest=_digest(login),
                    poll_digest=_digest(poll),
                    client=client[:256],
                    expires_at=now + LIFETIME,
                )
            )
        return login, poll

    def find(self, login_token: str, now: float | None = None) -> Pending | None:
        now = time.time() if now is None else now
        with self.db.session() as session:
            row = session.execute(
                select(LoginFlow).where(
                    LoginFlow.login_digest == _digest(login_token), LoginFlow.expires_at > now
                )
            ).scalar_one_or_none()
            return None if row is None else Pending(row.id, row.client, row.granted_to)

    def grant(self, flow_id: int, username: str) -> bool:
        with self.db.session() as session:
            done = session.execute(
                update(LoginFlow)
                .where(LoginFlow.id == flow_id, LoginFlow.granted_to.is_(None))
                .values(granted_to=username)
            )
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def deny(self, flow_id: int) -> None:
        with self.db.session() as session:
            session.execute(delete(LoginFlow).where(LoginFlow.id == flow_id))

    def poll(self, poll_token: str, now: float | None = None) -> Granted | None:
        """The app password for a granted flow, once; None while pending or unknown."""
        now = time.time() if now is None else now
        with self.db.session() as session:
            row = session.execute(
                select(LoginFlow).where(
                    LoginFlow.poll_digest == _digest(poll_token), LoginFlow.expires_at > now
                )
            ).scalar_one_or_none()
            if row is None or row.granted_to is None:
                return None
            # Claim it: of two polls at once, one gets the password.
            claimed = session.execute(delete(LoginFlow).where(LoginFlow.id == row.id))
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            username, client = row.granted_to, row.client
        label = self._label(client)
        for attempt in range(5):
            try:
                password = app_passwords.create(self.db, username, label)
                return Granted(username, password, label)
            except AdminError:
                label = f"{self._label(client)} {attempt + 2}"
        return None

    @staticmethod
    def _label(client: str) -> str:
        name = _LABEL_CHARS.sub(" ", client).strip()[:60] or "sync client"
        if not name[0].isalnum():
            name = "client " + name
        return f"{name} {time.strftime('%Y-%m-%d %H.%M', time.gmtime())}"
