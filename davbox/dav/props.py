"""Dead properties in SQL, keyed by canonical path (WsgiDAV property-manager interface).

Contract: implements the methods WsgiDAV's ``PropertyManager`` has, plus
``move_tree``/``copy_tree``/``remove_tree`` for recursive operations. Reads are
served from a per-process cache filled one folder at a time (one query for a
whole PROPFIND Depth 1); every write goes to the database first. The cache is
per process and dropped by this process's own tree operations
(``invalidate()``): several processes on one database need the shared
coordination that comes with multi-process support (issue 7).
"""

from __future__ import annotations

import threading

from sqlalchemy import delete, or_, select

from davbox.db import Database
from davbox.db.models import DeadProperty


def _parent(path: str) -> str:
    return path.rstrip("/").rpartition("/")[0] or "/"


def _like_prefix(path: str) -> str:
    escaped = path.rstrip("/").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "/%"


class SqlPropertyManager:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._props: dict[str, dict[str, bytes]] = {}
        self._loaded_parents: set[str] = set()

    def __repr__(self) -> str:
        return "SqlPropertyManager"

    def invalidate(self) -> None:
        with self._lock:
            self._props.clear()
            self._loaded_parents.clear()

    def _props_of(self, path: str) -> dict[str, bytes]:
        parent = _parent(path)
        if parent not in self._loaded_parents:
            with self.db.session() as session:
                rows = session.execute(
                    select(DeadProperty.path, DeadProperty.name, DeadProperty.value).where(
                        DeadProperty.parent == parent
                    )
                ).all()
            loaded: dict[str, dict[str, bytes]] = {}
            for row_path, name, value in rows:
                loaded.setdefault(row_path, {})[name] = value
            with self._lock:
                self._props.update(loaded)
                self._loaded_parents.add(parent)
        return self._props.get(path, {})

    # --- WsgiDAV interface ----------------------------------------------------

    def get_properties(self, norm_url: str, environ: object = None) -> list[str]:
        return list(self._props_of(norm_url))

    def get_property(self, norm_url: str, name: str, environ: object = None) -> bytes | None:
        return self._props_of(norm_url).get(name)

    def write_property(
        self,
        norm_url: str,
        name: str,
        property_value: bytes,
        dry_run: bool = False,
        environ: object = None,
    ) -> None:
        if dry_run:
            return
        with self.db.session() as session:
            row = session.execute(
                select(DeadProperty).where(DeadProperty.path == norm_url, DeadProperty.name == name)
            ).scalar_one_or_none()
            if row is None:
                session.add(
                    DeadProperty(
                        path=norm_url, parent=_parent(norm_url), name=name, value=property_value
                    )
                )
            else:
                row.value = property_value
        self._props_of(norm_url)
        with self._lock:
            self._props.setdefault(norm_url, {})[name] = property_value

    def remove_property(
        self, norm_url: str, name: str, dry_run: bool = False, environ: object = None
    ) -> None:
        if dry_run:
            return
        with self.db.session() as session:
            session.execute(
                delete(DeadProperty).where(DeadProperty.path == norm_url, DeadProperty.name == name)
            )
        with self._lock:
            self._props.get(norm_url, {}).pop(name, None)

    def remove_properties(self, norm_url: str, environ: object = None) -> None:
        with self.db.session() as session:
            session.execute(delete(DeadProperty).where(DeadProperty.path == norm_url))
        with self._lock:
            self._props.pop(norm_url, None)

    def copy_properties(self, src_url: str, dest_url: str, environ: object = None) -> None:
        self._copy(src_url, dest_url, with_children=False)

    def move_properties(
        self, src_url: str, dest_url: str, with_children: bool, environ: object = None
    ) -> None:
        self.move_tree(src_url, dest_url) if with_children else self._move_one(src_url, dest_url)

    # --- tree operations ------------------------------------------------------

    def remove_tree(self, url: str) -> None:
        with self.db.session() as session:
            session.execute(delete(DeadProperty).where(self._tree(url)))
        self.invalidate()

    def move_tree(self, src_url: str, dest_url: str) -> None:
        with self.db.session() as session:
            session.execute(delete(DeadProperty).where(self._tree(dest_url)))
            rows = session.execute(select(DeadProperty).where(self._tree(src_url))).scalars()
            for row in rows:
                row.path = dest_url + row.path[len(src_url) :]
                row.parent = _parent(row.path)
        self.invalidate()

    def copy_tree(self, src_url: str, dest_url: str) -> None:
        self._copy(src_url, dest_url, with_children=True)

    def _move_one(self, src_url: str, dest_url: str) -> None:
        with self.db.session() as session:
            session.execute(delete(DeadProperty).where(DeadProperty.path == dest_url))
            for row in session.execute(
                select(DeadProperty).where(DeadProperty.path == src_url)
            ).scalars():
                row.path = dest_url
                row.parent = _parent(dest_url)
        self.invalidate()

    def _copy(self, src_url: str, dest_url: str, *, with_children: bool) -> None:
        where = self._tree(src_url) if with_children else DeadProperty.path == src_url
        with self.db.session() as session:
            target = self._tree(dest_url) if with_children else DeadProperty.path == dest_url
            session.execute(delete(DeadProperty).where(target))
            rows = session.execute(
                select(DeadProperty.path, DeadProperty.name, DeadProperty.value).where(where)
            ).all()
            for path, name, value in rows:
                new_path = dest_url + path[len(src_url) :]
                session.add(
                    DeadProperty(path=new_path, parent=_parent(new_path), name=name, value=value)
                )
        self.invalidate()

    @staticmethod
    def _tree(url: str):  # type: ignore[no-untyped-def]
        return or_(
            DeadProperty.path == (url.rstrip("/") or "/"),
            DeadProperty.path.like(_like_prefix(url), escape="\\"),
        )
