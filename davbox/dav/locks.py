"""WebDAV locks that survive a restart: WsgiDAV's dict lock storage, written through to SQL.

Contract: behaves exactly like ``wsgidav.lock_man.lock_storage.LockStorageDict``
(same methods, same expiry rules); every create, refresh and delete is also
written to the ``dav_locks`` table, and ``open()`` loads the unexpired locks
from it. Lock atomicity is per process, as in WsgiDAV: running several server
processes on one database needs the cross-process lock storage of a later
release.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, select
from wsgidav.lock_man.lock_storage import LockStorageDict

from davbox.db import Database
from davbox.db.models import DavLock

_FIELDS = ("root", "principal", "scope", "type", "depth", "timeout", "expire")


class SqlLockStorage(LockStorageDict):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    def __repr__(self) -> str:
        return "SqlLockStorage"

    def open(self) -> None:
        super().open()
        loaded: dict[str, Any] = self._dict  # type: ignore[assignment]
        now = time.time()
        with self.db.session() as session:
            session.execute(delete(DavLock).where(DavLock.expire >= 0, DavLock.expire < now))
            for row in session.execute(select(DavLock)).scalars():
                lock: dict[str, Any] = {name: getattr(row, name) for name in _FIELDS}
                lock["owner"] = row.owner
                lock["token"] = row.token
                loaded[row.token] = lock
                key = f"URL2TOKEN:{row.root}"
                loaded[key] = [*loaded.get(key, []), row.token]

    def create(self, path: str, lock: dict[str, Any]) -> dict[str, Any]:
        lock = super().create(path, lock)
        self._save(lock)
        return lock

    def refresh(self, token: str, *, timeout: float) -> dict[str, Any]:
        lock = super().refresh(token, timeout=timeout)
        self._save(lock)
        return lock

    def delete(self, token: str) -> bool:
        result = super().delete(token)
        with self.db.session() as session:
            session.execute(delete(DavLock).where(DavLock.token == token))
        return result

    def clear(self) -> None:
        super().clear()
        with self.db.session() as session:
            session.execute(delete(DavLock))

    def _save(self, lock: dict[str, Any]) -> None:
        owner = lock.get("owner") or b""
        values = {name: lock[name] for name in _FIELDS}
        values["owner"] = owner.encode() if isinstance(owner, str) else owner
        with self.db.session() as session:
            row = session.get(DavLock, lock["token"])
            if row is None:
                session.add(DavLock(token=lock["token"], **values))
            else:
                for name, value in values.items():
                    setattr(row, name, value)
