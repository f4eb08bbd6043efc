"""Database access: engine creation, sessions, migrations and change epochs.

Contract:
- ``Database(url)`` owns one SQLAlchemy engine; ``session()`` is a context
  manager that commits on success and rolls back on error.
- ``upgrade()`` applies the Alembic migrations shipped in this package; it is
  idempotent and is run at every server start and by ``davbox db upgrade``.
  Migrations form one line, each revision named by its file's four-digit
  number (``HEAD_REVISION`` is the highest).
- ``bump_epoch(session)`` records that accounts, groups or memberships changed;
  server processes poll ``current_epoch()`` to drop their caches.
- SQLite is opened with foreign keys on, WAL journaling and a busy timeout so
  the CLI and the server can write at the same time.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from davbox.db.models import Setting

EPOCH_KEY = "acl_epoch"
# The newest migration: revisions are their files' four-digit numbers, in one line.
HEAD_REVISION = max(
    p.name[:4] for p in (Path(__file__).parent / "migrations" / "versions").glob("[0-9]*.py")
)
SECRET_KEY = "server_secret"  # noqa: S105 (the name of a settings row)


class Database:
    """One database: its engine, a session factory and its migrations."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commit when the block ends, roll back if it raises."""
        with self._factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def upgrade(self) -> None:
        """Bring the schema to the newest migration.

        A database already at the newest one is recognised by one query, without
        loading Alembic (a third of a second at every command and start).
        """
        if self._revision() == HEAD_REVISION:
            return
        from alembic import command

        command.upgrade(self._alembic_config(), "head")

    def _revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except SQLAlchemyError:
            return None  # a new database: no version table yet

    def _alembic_config(self) -> Any:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        cfg.attributes["engine"] = self.engine
        return cfg

    def current_epoch(self) -> int:
        with self._factory() as session:
            value = session.get(Setting, EPOCH_KEY)
            return int(value.value) if value else 0

    def server_secret(self) -> bytes:
        """The random key for HMACs that only this installation knows (made on first use)."""
        try:
            with self.session() as session:
                row = session.get(Setting, SECRET_KEY)
                if row is None:
                    row = Setting(key=SECRET_KEY, value=secrets.token_hex(32))
                    session.add(row)
                return bytes.fromhex(row.value)
        except IntegrityError:
            # Another process made it at the same moment: theirs is the one.
            with self.session() as session:
                return bytes.fromhex(session.get(Setting, SECRET_KEY).value)  # type: ignore[union-attr]

    def dispose(self) -> None:
        self.engine.dispose()


def bump_epoch(session: Session) -> None:
    """Mark that accounts, groups or grants changed (call inside the changing transaction)."""
    row = session.execute(select(Setting).where(Setting.key == EPOCH_KEY)).scalar_one_or_none()
    if row is None:
        session.add(Setting(key=EPOCH_KEY, value="1"))
    else:
        row.value = str(int(row.value) + 1)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
