"""Where the embedded default keeps its files, derived from settings and the data directory."""

from __future__ import annotations

from pathlib import Path

from davbox.config import Settings


def database_url(settings: Settings, data_dir: Path) -> str:
    """The configured database, or the SQLite file ``davbox.db`` in the data directory."""
    return settings.database.url or f"sqlite:///{data_dir.resolve() / 'davbox.db'}"


def storage_root(settings: Settings, data_dir: Path) -> Path:
    """The configured storage folder, or ``storage/`` in the data directory."""
    return Path(settings.storage.path) if settings.storage.path else data_dir / "storage"
