"""Brute-force protection for logins: failures counted per account and per client address.

Contract:
- ``LoginThrottle.retry_after(keys)`` returns the seconds a client must wait
  (None when it may try): once a key (``account:<name>`` or
  ``address:<ip>``) has ``limit`` failures within ``window`` seconds, every
  further attempt waits 2, 4, 8 ... seconds after the last failure, at most
  ``max_delay``. While blocked, no password is checked (no hash is spent).
- ``begin(keys)`` records an attempt as a failure before the password is
  checked, so parallel attempts cannot all slip through one gap;
  ``succeeded(account_key, pending)`` takes the attempt back and forgets the
  account's failures (an address's other failures stay); ``withdraw(pending)``
  only takes the attempt back (a right password while a code is still due).
- Counts live in the database, so several server processes agree. Unknown
  accounts are counted like known ones: both get the same answers.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, func, select

from davbox.db import Database
from davbox.db.models import AuthFailure


class Throttled(Exception):
    """Too many failed logins: the client must wait ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} seconds")
        self.retry_after = retry_after


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
        # "link:<id>" counts password guesses on a share link like those on an account.
        self.limits = {"account": account_limit, "address": address_limit, "link": account_limit}
        self.window = window
        self.max_delay = max_delay
        self._purged_at = 0.0

    @staticmethod
    def keys(username: str, address: str) -> list[str]:
        return [f"account:{username.casefold()}", f"address:{address}"]

    def retry_after(self, keys: list[str], before: dict[str, int] | None = None) -> int | None:
        """Seconds to wait, judging the failures recorded (before ``before``'s ids, if given)."""
        now = time.time()
        worst = 0.0
        with self.db.session() as session:
            for key in keys:
                query = select(func.count(), func.max(AuthFailure.at)).where(
                    AuthFailure.key == key, AuthFailure.at > now - self.window
                )
                if before is not None:
                    query = query.where(AuthFailure.id < before[key])
                count, last = session.execute(query).one()
                limit = self.limits[key.partition(":")[0]]
                if count >= limit and last is not None:
                    delay = min(self.max_delay, 2.0 ** (count - limit + 1))
                    worst = max(worst, last + delay - now)
        return int(worst) + 1 if worst > 0 else None

    def begin(self, keys: list[str]) -> dict[str, int]:
        """Record an attempt as a failure *before* the password is checked.

        Parallel attempts each see the ones recorded before them
        (``retry_after(keys, before=...)``), so N connections at once get one
        guess, not N. A successful attempt takes its records back (``succeeded``).
        """
        now = time.time()
        with self.db.session() as session:
            rows = [AuthFailure(key=key, at=now) for key in keys]
            session.add_all(rows)
            session.flush()
            pending = {row.key: row.id for row in rows}
            if now - self._purged_at > 60:
                self._purged_at = now
                session.execute(delete(AuthFailure).where(AuthFailure.at < now - self.window))
        return pending

    def attempt(self, keys: list[str]) -> dict[str, int]:
        """Record an attempt before it is checked (``begin``); raise ``Throttled`` while blocked.

        Returns the attempt's records, for ``succeeded`` or ``withdraw``.
        """
        wait = self.retry_after(keys)
        pending: dict[str, int] = {}
        if wait is None:
            pending = self.begin(keys)
            wait = self.retry_after(keys, before=pending)
        if wait is not None:
            raise Throttled(wait)
        return pending

    def succeeded(self, account_key: str, pending: dict[str, int] | None = None) -> None:
        """Forget the account's failures and this attempt's own records."""
        with self.db.session() as session:
            session.execute(delete(AuthFailure).where(AuthFailure.key == account_key))
            if pending:
                session.execute(delete(AuthFailure).where(AuthFailure.id.in_(pending.values())))

    def withdraw(self, pending: dict[str, int]) -> None:
        """Take back this attempt's own records only: it was right, but a step is still due."""
        if pending:
            with self.db.session() as session:
                session.execute(delete(AuthFailure).where(AuthFailure.id.in_(pending.values())))
