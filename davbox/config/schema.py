"""The configuration schema: every key davbox reads, with its type and default.

Contract: models forbid unknown keys and use strict scalar types (a quoted
number is not an int, ``no`` is not a bool); sizes accept units (``64KiB``).
``config.example.yaml`` documents every key; a test keeps the two in step.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Section):
    cert: StrictStr = Field(description="PEM certificate chain file")
    key: StrictStr = Field(description="PEM private key file")


class ServerSettings(_Section):
    listen: StrictStr = Field("127.0.0.1:8080", description="HOST:PORT to listen on")
    public_url: StrictStr | None = Field(
        None, description="URL users see, if a proxy sits in front (printed at start)"
    )
    threads: StrictInt = Field(16, ge=1, le=1024, description="worker threads")
    request_timeout: StrictInt = Field(
        60, ge=1, le=3600, description="seconds a connection may stay silent mid-request"
    )
    max_header_size: ByteSize = Field(ByteSize(65536), description="largest request header block")
    shutdown_timeout: StrictInt = Field(
        5, ge=0, le=600, description="seconds to finish requests at stop"
    )
    tls: TlsSettings | None = Field(None, description="serve HTTPS with this certificate")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class DatabaseSettings(_Section):
    url: StrictStr | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file davbox.db in the data directory"
    )


class StorageSettings(_Section):
    path: StrictStr | None = Field(
        None, description="folder holding the mailboxes; default: storage/ in the data directory"
    )
    block_size: ByteSize = Field(
        ByteSize(1024 * 1024), description="read/write block size for transfers"
    )


class AuthSettings(_Section):
    realm: StrictStr = Field("davbox", description="realm shown in the Basic login prompt")
    cache_ttl: StrictInt = Field(
        300, ge=0, le=86400, description="seconds a verified password stays cached (0: off)"
    )
    refresh_interval: StrictFloat = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="seconds between checks for account and membership changes",
    )
    two_factor_for: list[StrictStr] = Field(
        default_factory=lambda: ["*"],
        description="accounts under two-factor login: *, @group, mailbox:NAME or a name",
    )
    throttle_account_failures: StrictInt = Field(
        10, ge=1, le=10000, description="failed logins per account before logins slow down"
    )
    throttle_address_failures: StrictInt = Field(
        50, ge=1, le=100000, description="failed logins per client address before it slows down"
    )
    throttle_window: StrictInt = Field(
        900, ge=1, le=86400, description="seconds over which failed logins are counted"
    )
    throttle_max_delay: StrictInt = Field(
        900, ge=1, le=86400, description="longest wait (seconds) imposed after failures"
    )


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    access_log: StrictBool = Field(True, description="one line per request (never credentials)")


class Settings(_Section):
    """The whole file. ``policies`` is a list of rules checked by ``davbox.policies.registry``."""

    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]
    policies: list[Any] = Field(
        default_factory=list, description="access and limit rules (see policies/)"
    )


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:8080``); raise ValueError with a readable text."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host.strip("[]"), port
