"""Brute-force protection for logins: failures counted per account and per client address.

Contract:
- ``LoginThrottle.retry_after(keys)`` returns the seconds a client must wait
  (None when it may try): once a key (``account:<name>`` or
  ``address:<ip>``) has ``limit`` failures within ``window`` seconds, every
  further attempt waits 2, 4, 8 ... seconds after the last failure, at most
  ``max_delay``. While blocked, no password is checked (no hash is spent).
- ``failed(keys)`` records a failure for each key; ``succeeded(account_key)``
  forgets an account's failures (an address's stay).
- Counts live in the database, so several server processes agree. Unknown
  accounts are counted like known ones: both get the same answers.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, func, select

from davbox.db import Database
from davbox.db.models import AuthFailure


class LoginThrottle:
    def __init__(
        self,
        db: Database,
        *,
        account_limit: int,
        address_limit: int,
        window: float,
        max_delay: float,
    ) -> None:
        self.db = db
        self.limits = {"account": account_limit, "address": address_limit}
        self.window = window
        self.max_delay = max_delay
        self._purged_at = 0.0

    @staticmethod
    def keys(username: str, address: str) -> list[str]:
        return [f"account:{username.casefold()}", f"address:{address}"]

    def retry_after(self, keys: list[str]) -> int | None:
        now = time.time()
        worst = 0.0
        with self.db.session() as session:
            rows = session.execute(
                select(AuthFailure.key, func.count(), func.max(AuthFailure.at))
                .where(AuthFailure.key.in_(keys), AuthFailure.at > now - self.window)
                .group_by(AuthFailure.key)
            ).all()
        for key, count, last in rows:
            limit = self.limits[key.partition(":")[0]]
            if count >= limit:
                delay = min(self.max_delay, 2.0 ** (count - limit + 1))
                worst = max(worst, last + delay - now)
        return int(worst) + 1 if worst > 0 else None

    def failed(self, keys: list[str]) -> None:
        now = time.time()
        with self.db.session() as session:
            session.add_all(AuthFailure(key=key, at=now) for key in keys)
            if now - self._purged_at > 60:
                self._purged_at = now
                session.execute(delete(AuthFailure).where(AuthFailure.at < now - self.window))

    def succeeded(self, account_key: str) -> None:
        with self.db.session() as session:
            session.execute(delete(AuthFailure).where(AuthFailure.key == account_key))
