"""Where things are, derived from settings: the embedded default's files, the public URL."""

from __future__ import annotations

from pathlib import Path

from davbox.config import Settings
from davbox.config.schema import parse_listen


def database_url(settings: Settings, data_dir: Path) -> str:
    """The configured database, or the SQLite file ``davbox.db`` in the data directory."""
    return settings.database.url or f"sqlite:///{data_dir.resolve() / 'davbox.db'}"


def storage_root(settings: Settings, data_dir: Path) -> Path:
    """The configured storage folder, or ``storage/`` in the data directory."""
    return Path(settings.storage.path) if settings.storage.path else data_dir / "storage"


def base_url(settings: Settings, bound: tuple[str, int] | None = None) -> str:
    """The address users reach the server at: ``server.public_url``, else the listen
    address (``bound``: where the server actually listens, if known)."""
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    host, port = bound or parse_listen(settings.server.listen)
    scheme = "https" if settings.server.tls else "http"
    if ":" in host:
        host = f"[{host}]"
    elif host in ("0.0.0.0", ""):  # noqa: S104 (only for display)
        host = "localhost"
    return f"{scheme}://{host}:{port}"
