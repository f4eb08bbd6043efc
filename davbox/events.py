"""Typed events: what happened, told after the fact to sinks (audit, notifications, logs).

Contract:
- Every event is a frozen dataclass with UTC time, request id, actor (a name;
  ``actor_kind`` "user", "app-password", "link" or "admin" and, for app
  passwords and links, ``credential_id``), client address (``REMOTE_ADDR``,
  or the forwarded one behind a trusted proxy: see ``davbox.proxies``), user
  agent, mailbox, path and the HTTP status the request got (None where there
  is no HTTP request, e.g. the command line); subclasses add what is
  particular to them. Events never carry passwords, tokens or file content.
- ``EventBus.emit`` hands the event to every sink in order. A sink that
  raises makes ``emit`` raise (the caller refuses the operation: fail closed);
  sinks are configured, never discovered.
- The built-in ``LogSink`` writes one line per event to the ``davbox.events``
  logger, with no secrets (there are none in events: share links appear by
  id, never by token).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from davbox.policies.base import Principal

MAX_USER_AGENT = 256  # characters of User-Agent kept (clients send what they like)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"

    request_id: str = ""
    actor: str = ""
    actor_kind: str = ""
    credential_id: int | None = None
    email: str = ""  # the external person behind a link sent to or asked of them
    client: str = ""
    user_agent: str = ""
    mailbox: str = ""
    path: str = ""
    status: int | None = None
    time: datetime = field(default_factory=_now)

    def fields(self) -> dict[str, Any]:
        """The event's values but its time (shallow: event fields are plain values)."""
        return {name: getattr(self, name) for name in _field_names(type(self))}


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
    "throttled", "unavailable" (an identity provider could not answer),
    "denied" (the person cancelled an app's Login Flow) or "is-app-password"
    (``getapppassword`` with an app password); ``via``: "dav" (Basic auth),
    "web" (the login pages), "ocs" or "login-flow".
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
class LinkCreated(Event):
    kind: ClassVar[str] = "link-created"

    link_id: int
    permission: str


@dataclass(frozen=True, kw_only=True)
class LinkRevoked(Event):
    kind: ClassVar[str] = "link-revoked"

    link_id: int


@dataclass(frozen=True, kw_only=True)
class LinkChanged(Event):
    """A link's settings changed: ``changed`` names the fields, never their values."""

    kind: ClassVar[str] = "link-changed"

    link_id: int
    changed: tuple[str, ...]
    permission: str


@dataclass(frozen=True, kw_only=True)
class LinkUsed(Event):
    """A request through a share link (``method``, path inside the link's folder)."""

    kind: ClassVar[str] = "link-used"

    link_id: int
    method: str


@dataclass(frozen=True, kw_only=True)
class LinkCodeSent(Event):
    """A one-time code for a link went to its recipient (``channel``: "mail" or "webhook").

    ``status`` 200 when handed on; 503 when the channel failed (no code is valid then).
    """

    kind: ClassVar[str] = "link-code-sent"

    link_id: int
    channel: str


@dataclass(frozen=True, kw_only=True)
class RegistrationRequested(Event):
    """Someone asked for an account at ``/register`` (``email``: the address given).

    ``outcome`` "link" (a verification link was mailed) or "notice" (the
    address already has an account: a notice was mailed, no link). The page
    answers both alike; only the audit trail tells them apart.
    """

    kind: ClassVar[str] = "registration-requested"

    outcome: str


@dataclass(frozen=True, kw_only=True)
class RegistrationRefused(Event):
    """A registration or verification was refused (``reason``).

    "domain" (the address is outside ``allowed_domains``), "address" (not a
    mail address), "name" (not usable as an account name), "throttled", or
    "link" (a verification link that is unknown, used, replaced or expired).
    """

    kind: ClassVar[str] = "registration-refused"

    reason: str


@dataclass(frozen=True, kw_only=True)
class AccountRegistered(Event):
    """A verification link was confirmed: the account ``actor`` now exists.

    ``grants``: the "MAILBOX:role" pairs it was given (``web.registration.grants``).
    """

    kind: ClassVar[str] = "account-registered"

    grants: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ConfigReloaded(Event):
    """The running server re-read its configuration file (``path``: that file).

    ``outcome`` "applied" (``rules`` policies now in force) or "refused" (the
    file has ``problems`` problems; the last good policies stay); ``trigger``
    "file" (it changed) or "signal" (SIGHUP). The actor is "system".
    """

    kind: ClassVar[str] = "config-reload"

    outcome: str
    trigger: str
    rules: int = 0
    problems: int = 0


@dataclass(frozen=True, kw_only=True)
class AuditTrimmed(Event):
    """Audit records older than ``before`` (UTC ISO) were removed (``audit.keep_days``):
    ``removed`` of them, up to record ``anchor``, where the chain now starts."""

    kind: ClassVar[str] = "audit-trim"

    removed: int
    anchor: int
    before: str


@dataclass(frozen=True, kw_only=True)
class LinkViewed(Event):
    """A share link's page was shown (``page``: "folder", "file", "drop" or "password")."""

    kind: ClassVar[str] = "link-viewed"

    link_id: int
    page: str


@dataclass(frozen=True, kw_only=True)
class LinkDownloaded(Event):
    """A file, or a folder as one zip (``archive``), was sent through a share link's pages.

    Recorded when the answer ends: ``size`` is the bytes actually sent,
    ``range`` the Content-Range of a partial (206) answer, ``complete`` False
    when the browser went away before the end.
    """

    kind: ClassVar[str] = "link-downloaded"

    link_id: int
    archive: bool = False
    size: int | None = None
    range: str = ""
    complete: bool = True


@dataclass(frozen=True, kw_only=True)
class LinkUploaded(Event):
    """A file arrived through a share link (``path`` is where it was stored)."""

    kind: ClassVar[str] = "link-uploaded"

    link_id: int
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class SubscriptionChanged(Event):
    """An account changed its own notification settings (the web page).

    ``setting``: "placed" or "fetched" for ``mailbox``, or "language" (no
    mailbox); ``before``/``after``: "off", "immediate", "hourly" or "daily",
    for the language "nl", "en" or "" (the server's ``mail.language``).
    """

    kind: ClassVar[str] = "subscription-changed"

    setting: str
    before: str
    after: str


@dataclass(frozen=True, kw_only=True)
class Uploaded(Event):
    """A WebDAV PUT: ``path`` is where the file is stored, ``requested`` the path asked
    for when that name was taken (create-only callers get "name (2).ext").

    ``status`` 201 (new) or 204 (``replaced`` a file) once stored; any other
    status is an upload that stored nothing (``size``: bytes received).
    ``sha256`` is computed while the bytes stream in.
    """

    kind: ClassVar[str] = "upload"

    size: int = 0
    sha256: str = ""
    duration_ms: int = 0
    replaced: bool = False
    requested: str = ""


@dataclass(frozen=True, kw_only=True)
class Downloaded(Event):
    """A WebDAV GET of a file: ``size`` is the bytes actually sent.

    ``range`` is the Content-Range of a partial (206) answer, "" for the whole
    file; ``complete`` is False when the client went away before the end.
    """

    kind: ClassVar[str] = "download"

    size: int = 0
    range: str = ""
    complete: bool = True


@dataclass(frozen=True, kw_only=True)
class Deleted(Event):
    """A WebDAV DELETE of a file or a folder with everything in it."""

    kind: ClassVar[str] = "delete"


@dataclass(frozen=True, kw_only=True)
class Moved(Event):
    """A WebDAV MOVE from ``mailbox``/``path`` to ``to_mailbox``/``to_path``."""

    kind: ClassVar[str] = "move"

    to_mailbox: str = ""
    to_path: str = ""


@dataclass(frozen=True, kw_only=True)
class Copied(Event):
    """A WebDAV COPY from ``mailbox``/``path`` to ``to_mailbox``/``to_path``."""

    kind: ClassVar[str] = "copy"

    to_mailbox: str = ""
    to_path: str = ""


@dataclass(frozen=True, kw_only=True)
class FileExpired(Event):
    """The expiry job deleted a file whose retention ran out (``rule``: the policy).

    ``uploaded_at``: the server-recorded upload time it counted from (UTC ISO);
    ``file_id``: the upload-time record it claimed. The actor is "system".
    """

    kind: ClassVar[str] = "expiry-delete"

    rule: str
    uploaded_at: str
    size: int
    file_id: int


@dataclass(frozen=True, kw_only=True)
class IntegrityFailed(Event):
    """A stored file failed its integrity check (encrypted storage): changed on disk.

    Nothing of the failing part was sent; ``reason`` says what failed. The
    request's status is 500, or ``None`` when the answer had begun (the
    connection was then cut) or there was no request (a job).
    """

    kind: ClassVar[str] = "integrity-failed"

    reason: str


@dataclass(frozen=True, kw_only=True)
class KeysRotated(Event):
    """``davbox keys rotate``: a new key-encryption key; data keys rewrapped to it.

    ``retired``: the old KEKs destroyed (comma-separated ids; empty if some were
    still in use and wait for the next rotation).
    """

    kind: ClassVar[str] = "keys-rotated"

    kek: str
    rewrapped: int
    retired: str


@dataclass(frozen=True, kw_only=True)
class FolderCreated(Event):
    """A WebDAV MKCOL."""

    kind: ClassVar[str] = "mkcol"


@dataclass(frozen=True, kw_only=True)
class Locked(Event):
    """A WebDAV LOCK (a new lock, or ``refresh`` of one held)."""

    kind: ClassVar[str] = "lock"

    refresh: bool = False


@dataclass(frozen=True, kw_only=True)
class Unlocked(Event):
    """A WebDAV UNLOCK."""

    kind: ClassVar[str] = "unlock"


@dataclass(frozen=True, kw_only=True)
class PropertiesChanged(Event):
    """A WebDAV PROPPATCH (dead properties; their names and values are not recorded)."""

    kind: ClassVar[str] = "proppatch"


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...


class LogSink:
    """One ``key=value`` line per event on the ``davbox.events`` logger."""

    def __init__(self) -> None:
        self.log = logging.getLogger("davbox.events")

    def handle(self, event: Event) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        values = event.fields()
        details = " ".join(
            f"{k}={values[k]!r}" for k in _log_order(type(event)) if values[k] not in ("", None)
        )
        self.log.info("%s %s", event.kind, details)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_LOG_ORDER: dict[type, list[str]] = {}


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls) if f.name != "time")
    return names


def _log_order(cls: type[Event]) -> list[str]:
    order = _LOG_ORDER.get(cls)
    if order is None:
        order = _LOG_ORDER[cls] = _compute_log_order(cls)
    return order


def _compute_log_order(cls: type[Event]) -> list[str]:
    """Common fields first, then the event's own in the order its class declares them
    (a class that declares ``status`` itself shows it among its own fields)."""
    own: list[str] = []
    for klass in reversed(cls.__mro__):
        if klass is not Event and isinstance(klass, type) and issubclass(klass, Event):
            own += [n for n in inspect.get_annotations(klass) if n != "kind"]
    common = [f.name for f in fields(Event) if f.name not in own and f.name != "time"]
    return common + list(dict.fromkeys(own))


class EventBus:
    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = sinks if sinks is not None else [LogSink()]

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.handle(event)


def actor_details(principal: Principal | None) -> dict[str, Any]:
    """``actor``, ``actor_kind`` and ``credential_id`` for a principal (None: nobody yet)."""
    if principal is None:
        return {"actor": "", "actor_kind": "", "credential_id": None}
    if principal.kind == "link":
        number = principal.name.removeprefix("link-")
        credential = int(number) if number.isdigit() else None
        return {
            "actor": principal.name,
            "actor_kind": "link",
            "credential_id": credential,
            "email": principal.email or "",
        }
    if principal.kind == "user" and principal.credential_id is not None:
        return {
            "actor": principal.name,
            "actor_kind": "app-password",
            "credential_id": principal.credential_id,
        }
    return {"actor": principal.name, "actor_kind": principal.kind, "credential_id": None}


def request_context(environ: dict[str, Any]) -> dict[str, Any]:
    """The event fields a WSGI request supplies: request id, actor, client address, user agent.

    ``REMOTE_ADDR`` is the client's address: the dispatcher has already put
    the forwarded address there when the request came through a trusted proxy.
    """
    context = actor_details(environ.get("davbox.principal"))
    if not context["actor"]:
        context["actor"] = environ.get("wsgidav.auth.user_name", "")
    return {
        "request_id": environ.get("davbox.request_id", ""),
        **context,
        "client": environ.get("REMOTE_ADDR", ""),
        "user_agent": environ.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT],
    }


@dataclass(frozen=True, kw_only=True)
class ReportViewed(Event):
    """A delivery report was shown or downloaded (``davbox.reports``).

    ``report``: "link", "file" or "links" (an account's overview);
    ``format``: "html", "pdf", "table" or "json"; ``link_id`` for a link's.
    """

    kind: ClassVar[str] = "report-viewed"

    report: str
    format: str
    link_id: int | None = None
