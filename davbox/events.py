"""Typed events: what happened, told after the fact to sinks (audit, notifications, logs).

Contract:
- Every event is a frozen dataclass with UTC time, request id, actor, client
  address, mailbox and path; subclasses add what is particular to them.
- ``EventBus.emit`` hands the event to every sink in order. A sink that
  raises makes ``emit`` raise (the caller refuses the operation: fail closed);
  sinks are configured, never discovered.
- The built-in ``LogSink`` writes one line per event to the ``davbox.events``
  logger, with no secrets (there are none in events: share links appear by
  id, never by token).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"

    request_id: str = ""
    actor: str = ""
    client: str = ""
    mailbox: str = ""
    path: str = ""
    time: datetime = field(default_factory=_now)

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "time"}


@dataclass(frozen=True, kw_only=True)
class AccessRefused(Event):
    """A policy or role refused an operation (the request got ``status``)."""

    kind: ClassVar[str] = "access-refused"

    operation: str
    status: int
    rule: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class LoginRefused(Event):
    """Credentials were refused.

    ``outcome``: "malformed", "wrong", "wrong-code", "app-password-required",
    "throttled" or "unavailable" (an identity provider could not answer);
    ``via``: "dav" (Basic auth) or "web" (the login pages).
    """

    kind: ClassVar[str] = "login-refused"

    outcome: str
    status: int
    via: str = "dav"


@dataclass(frozen=True, kw_only=True)
class LoginSucceeded(Event):
    """A web login completed (``method``: "password" or "password+code")."""

    kind: ClassVar[str] = "login-succeeded"

    method: str
    via: str = "web"


@dataclass(frozen=True, kw_only=True)
class LinkViewed(Event):
    """A share link's page was shown (``page``: "folder", "file", "drop" or "password")."""

    kind: ClassVar[str] = "link-viewed"

    link_id: int
    page: str


@dataclass(frozen=True, kw_only=True)
class LinkDownloaded(Event):
    """A file, or a folder as one zip (``archive``), was sent through a share link."""

    kind: ClassVar[str] = "link-downloaded"

    link_id: int
    archive: bool = False
    size: int | None = None  # None for a zip (streamed, its size is known only at the end)


@dataclass(frozen=True, kw_only=True)
class LinkUploaded(Event):
    """A file arrived through a share link (``path`` is where it was stored)."""

    kind: ClassVar[str] = "link-uploaded"

    link_id: int
    size: int
    sha256: str


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...


class LogSink:
    """One ``key=value`` line per event on the ``davbox.events`` logger."""

    def __init__(self) -> None:
        self.log = logging.getLogger("davbox.events")

    def handle(self, event: Event) -> None:
        details = " ".join(f"{k}={v!r}" for k, v in event.fields().items() if v not in ("", None))
        self.log.info("%s %s", event.kind, details)


class EventBus:
    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = sinks if sinks is not None else [LogSink()]

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.handle(event)


def request_context(environ: dict[str, Any]) -> dict[str, Any]:
    """The event fields a WSGI request supplies (request id, actor, client address)."""
    return {
        "request_id": environ.get("davbox.request_id", ""),
        "actor": environ.get("wsgidav.auth.user_name", ""),
        "client": environ.get("REMOTE_ADDR", ""),
    }
