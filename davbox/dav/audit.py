"""WebDAV requests into the audit trail: one event per changing request and per download.

Wraps a WsgiDAV app (the members' and the share links' one) inside
authentication, so ``davbox.principal`` and the canonical ``PATH_INFO``
(``/<mailbox>/<path>``) are known.

Contract:
- GET, PUT, DELETE, MOVE, COPY, MKCOL, LOCK, UNLOCK and PROPPATCH each give
  exactly one event, whatever the outcome (its ``status`` says it): the
  request's ``AccessRefused`` when a policy refused it, the ``Uploaded`` the
  upload's commit emitted (``davbox.audited`` set by whoever emitted one),
  else the one this middleware emits. PROPFIND, HEAD and OPTIONS are not
  recorded here (share-link requests are recorded as ``LinkUsed`` whatever
  the method).
- Fail closed: before a GET and the other changing requests (not PUT: its
  commit writes the record before the client is answered) the audit store
  is asked whether it can write (``check_writable``); if not, the answer is
  503 and nothing is done. The answer to a changing request goes out only
  after its record is written; if that write fails, the client gets 503
  ("done, but not recorded") instead of a success.
- Downloads: the record is written when the body ends or is abandoned
  (``close``), with the bytes actually sent and whether a range was asked
  for. Bytes already sent cannot be taken back: a failure then is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from davbox.audit import AuditStore, AuditUnavailable
from davbox.events import (
    Copied,
    Deleted,
    Downloaded,
    Event,
    EventBus,
    FolderCreated,
    Locked,
    Moved,
    PropertiesChanged,
    Unlocked,
    Uploaded,
    request_context,
)
from davbox.http import plain_response

AUDITED = frozenset(
    {"GET", "PUT", "DELETE", "MOVE", "COPY", "MKCOL", "LOCK", "UNLOCK", "PROPPATCH"}
)
NOT_RECORDED = (
    "the audit trail cannot be written, so nothing is done now; try again later"
    " (administrators: see the server log)"
)
DONE_NOT_RECORDED = (
    "the change was made but the audit trail could not record it; administrators: see the"
    " server log"
)
_log = logging.getLogger("davbox.audit")


def mark_audited(environ: dict[str, Any]) -> None:
    """Tell the middleware that this request's event has been emitted already."""
    environ["davbox.audited"] = True


def location(path_info: str) -> tuple[str, str]:
    """(mailbox, path inside it) of a canonical WSGI ``PATH_INFO``."""
    try:
        path = path_info.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        path = path_info
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "", "/"
    return parts[0], "/" + "/".join(parts[1:])


class AuditMiddleware:
    def __init__(
        self, app: Callable[..., Iterable[bytes]], events: EventBus, store: AuditStore | None
    ) -> None:
        self.app = app
        self.events = events
        self.store = store

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        if method not in AUDITED:
            return self.app(environ, start_response)
        if method != "PUT" and self.store is not None:
            try:
                self.store.check_writable()
            except AuditUnavailable:
                return plain_response(environ, start_response, 503, NOT_RECORDED)
        requested = location(environ.get("PATH_INFO", ""))
        environ["davbox.requested"] = requested  # an upload may be stored under another name
        if method == "GET":
            return self._download(environ, start_response, requested)
        return self._change(environ, start_response, method, requested)

    def _change(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        method: str,
        requested: tuple[str, str],
    ) -> Iterable[bytes]:
        answer: list[Any] = []

        def held_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            answer[:] = [status, headers, exc_info]
            return lambda data: None  # WsgiDAV returns its bodies; write() is not used

        body = self.app(environ, held_start_response)
        chunks = iter(body)
        first: list[bytes] = []
        if not answer:
            first = [next(chunks, b"")]  # a lazy app answers at its first chunk
        status, headers, exc_info = answer
        if not environ.get("davbox.audited"):
            event = self._event(environ, method, requested, int(status[:3]))
            try:
                self.events.emit(event)
            except AuditUnavailable:
                _close(body)
                return plain_response(environ, start_response, 503, DONE_NOT_RECORDED)
        start_response(status, headers, exc_info)
        return _chain(first, chunks, body)

    def _event(
        self, environ: dict[str, Any], method: str, requested: tuple[str, str], code: int
    ) -> Event:
        mailbox, path = requested
        where: dict[str, Any] = {
            **request_context(environ),
            "mailbox": mailbox,
            "path": path,
            "status": code,
        }
        if method == "PUT":
            return Uploaded(**where)
        if method in ("MOVE", "COPY"):
            to_mailbox, to_path = self._destination(environ)
            cls = Moved if method == "MOVE" else Copied
            return cls(**where, to_mailbox=to_mailbox, to_path=to_path)
        if method == "LOCK":
            refresh = not environ.get("CONTENT_LENGTH", "").strip("0 ") and "HTTP_IF" in environ
            return Locked(**where, refresh=refresh)
        kinds: dict[str, type[Event]] = {
            "DELETE": Deleted,
            "MKCOL": FolderCreated,
            "UNLOCK": Unlocked,
            "PROPPATCH": PropertiesChanged,
        }
        return kinds[method](**where)

    @staticmethod
    def _destination(environ: dict[str, Any]) -> tuple[str, str]:
        """The Destination as (mailbox, path) for the record (authorization never uses this)."""
        path = unquote(urlsplit(environ.get("HTTP_DESTINATION", "")).path)
        script = environ.get("SCRIPT_NAME", "").rstrip("/")
        if script and (path == script or path.startswith(script + "/")):
            path = path[len(script) :]
        parts = [p for p in path.split("/") if p]
        return (parts[0], "/" + "/".join(parts[1:])) if parts else ("", "/")

    def _download(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        requested: tuple[str, str],
    ) -> Iterable[bytes]:
        answer: dict[str, Any] = {"status": 0, "range": ""}

        def recording_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
            answer["status"] = int(status[:3])
            answer["range"] = next((v for k, v in headers if k.lower() == "content-range"), "")
            return start_response(status, headers, exc_info)

        body = self.app(environ, recording_start_response)
        return CountedBody(
            body,
            lambda sent, complete: self._downloaded(environ, requested, answer, sent, complete),
        )

    def _downloaded(
        self,
        environ: dict[str, Any],
        requested: tuple[str, str],
        answer: dict[str, Any],
        sent: int,
        complete: bool,
    ) -> None:
        if environ.get("davbox.audited"):
            return
        mailbox, path = requested
        event = Downloaded(
            **request_context(environ),
            mailbox=mailbox,
            path=path,
            status=answer["status"],
            size=sent if answer["status"] in (200, 206) else 0,
            range=answer["range"],
            complete=complete,
        )
        try:
            self.events.emit(event)
        except AuditUnavailable:
            # The bytes are gone already; the store was writable when the download began.
            _log.error(
                "download of %s%s by %s (request %s) could not be recorded",
                mailbox,
                path,
                event.actor,
                event.request_id,
            )


class CountedBody:
    """A response body that counts what it yields and reports once when closed."""

    def __init__(self, body: Iterable[bytes], report: Callable[[int, bool], None]) -> None:
        self.body = body
        self.report = report
        self.sent = 0
        self.complete = False
        self.reported = False

    def __iter__(self) -> Iterator[bytes]:
        # Reported when the body ends, or when the server (or a ``yield from``
        # above us) closes this generator: the client went away.
        try:
            for chunk in self.body:
                self.sent += len(chunk)
                yield chunk
            self.complete = True
        finally:
            self.close()

    def close(self) -> None:
        try:
            _close(self.body)
        finally:
            if not self.reported:
                self.reported = True
                self.report(self.sent, self.complete)


def _chain(first: list[bytes], rest: Iterator[bytes], body: Iterable[bytes]) -> Iterator[bytes]:
    try:
        yield from first
        yield from rest
    finally:
        _close(body)


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()
