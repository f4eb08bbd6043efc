"""Servers with encryption at rest: a master key file and a config that names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from davbox.keys import new_master_key


def encrypted_config(folder: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``master.key`` (0600) and ``config.yaml`` (encryption on, plus ``extra``)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "master.key"
    if not key.exists():
        key.write_text(new_master_key() + "\n")
        key.chmod(0o600)
    data: dict[str, Any] = dict(extra or {})
    storage = dict(data.get("storage") or {})
    storage["encryption"] = {"master_key": {"$file": str(key)}}
    data["storage"] = storage
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def encrypted_server(make_server: Any, tmp_path: Path, name: str = "enc", **extra: Any) -> Any:
    """A started server (``make_server`` fixture) whose storage is encrypted."""
    config = encrypted_config(tmp_path / f"{name}-conf", extra or None)
    return make_server(name, config=config)
