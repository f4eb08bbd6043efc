"""Leases for scheduled jobs: with several server processes on one database, one runs a job.

Contract: ``JobLeases(db).acquire(name, hold, now)`` is True for exactly one
caller among all processes until ``hold`` seconds have passed (one guarded
UPDATE on the job's row; the row is made on first use). It is never
released early: a job run every ``interval`` seconds holds it for a little
less than that, so each period one process runs it; a process that died
mid-run leaves the lease to run out, and the next period's run finishes the
work (jobs are written to be safe to repeat).
"""

from __future__ import annotations

import time

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError

from davbox.db import Database
from davbox.db.models import JobRun


class JobLeases:
    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(self, name: str, hold: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        try:
            with self.db.session() as session:
                if session.get(JobRun, name) is None:
                    session.add(JobRun(name=name, held_until=None))
        except IntegrityError:
            pass  # another process made the row at the same moment
        with self.db.session() as session:
            taken = session.execute(
                update(JobRun)
                .where(
                    JobRun.name == name,
                    or_(JobRun.held_until.is_(None), JobRun.held_until <= now),
                )
                .values(held_until=now + hold)
            )
            return bool(taken.rowcount == 1)  # type: ignore[attr-defined]
