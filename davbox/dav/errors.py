"""Turn errors inside WsgiDAV into clean HTTP answers (replaces WsgiDAV's ErrorPrinter).

Contract: a ``DAVError`` becomes its status with a DAV error body carrying a
readable reason (``response_page``).
An upload refused before its body was read is answered with
``Connection: close`` and the body is never read. Any other exception is
logged with its traceback on the server and answered ``500`` with a request
id: no traceback, path or exception text reaches the client. An ``OSError``
for ENOSPC/EDQUOT/EFBIG becomes 507; a stored file failing its integrity
check (``ContentTampered``, recorded by the storage) a 500 saying so. An
error after the answer began is raised on: the server cuts the connection,
so the client cannot take a short body for the whole file.
"""

from __future__ import annotations

import errno
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

from wsgidav import util
from wsgidav.dav_error import DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from davbox.http import close_if_body_unread, new_request_id, status_line
from davbox.providers.storage.sealed import ContentTampered

_log = logging.getLogger("davbox.errors")
SABRE_NS = "http://sabredav.org/ns"
ET.register_namespace("d", "DAV:")
ET.register_namespace("s", SABRE_NS)
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
TAMPERED = (
    "the stored file failed its integrity check (it was changed on disk), so it is not sent;"
    " administrators: see the audit trail"
)


def response_page(error: DAVError) -> tuple[str, bytes]:
    """(content type, body) for a DAVError: a DAV error document with a readable message.

    With a DAV precondition, RFC 4918's ``<D:error>`` naming it. Otherwise a
    ``<d:error>`` carrying ``<s:message>`` in the SabreDAV namespace, which
    ownCloud/Nextcloud clients show to their users. The message is the reason
    given where the error was raised; never the source exception (paths, SQL,
    library internals).
    """
    code = error.value
    if error.err_condition is not None:
        return "application/xml; charset=utf-8", util.to_bytes(error.err_condition.as_string())
    if code < 300:
        return "text/plain; charset=utf-8", b""
    reason = error.context_info
    if not reason:
        try:
            reason = HTTPStatus(code).description
        except ValueError:
            reason = ""
    root = ET.Element("{DAV:}error")
    ET.SubElement(root, f"{{{SABRE_NS}}}exception").text = status_line(code)
    ET.SubElement(root, f"{{{SABRE_NS}}}message").text = reason
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
    return "application/xml; charset=utf-8", body


def install_response_pages() -> None:
    """Make WsgiDAV render every error with ``response_page`` (its own pages leak internals)."""
    DAVError.get_response_page = response_page  # type: ignore[method-assign]


def error_response(error: DAVError) -> tuple[str, list[tuple[str, str]], bytes]:
    """(status, headers, body) for a DAVError."""
    if error.value in (304, 204):
        return status_line(error.value), [("Content-Length", "0")], b""
    content_type, body = response_page(error)
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    headers += error.add_headers or []
    return status_line(error.value), headers, body


class DavErrorMiddleware(BaseMiddleware):
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        inner = util.SubAppStartResponse()
        started = False
        try:
            app_iter: Iterable[bytes] = self.next_app(environ, inner)
            try:
                for chunk in app_iter:
                    if not started:
                        start_response(inner.status, inner.response_headers, inner.exc_info)
                        started = True
                    yield chunk
            finally:
                close = getattr(app_iter, "close", None)
                if close:
                    close()
            if not started:
                start_response(inner.status, inner.response_headers, inner.exc_info)
            return
        except ContentTampered:
            # Recorded and logged by the storage's alarm. Once the answer has
            # begun it cannot become an error: the connection is cut instead.
            if started:
                raise
            error = DAVError(500, TAMPERED)
        except DAVError as exc:
            if started:
                raise
            error = exc
            source = error.src_exception
            if isinstance(source, (ConnectionError, TimeoutError)):
                _log.info("request %s: client connection lost (%s)", _request_id(environ), source)
                error = DAVError(
                    400, "the request body did not arrive completely; nothing was stored"
                )
            elif error.value >= 500 and source is not None:
                error = _internal(environ, source)
        except OSError as exc:
            if started:
                raise
            if exc.errno not in _FULL:
                error = _internal(environ, exc)
            else:
                error = DAVError(507, "not enough storage space; nothing was changed")
        except Exception as exc:
            if started:
                raise
            error = _internal(environ, exc)
        status, headers, body = error_response(error)
        close_if_body_unread(environ, headers)
        start_response(status, headers)
        if environ.get("REQUEST_METHOD") != "HEAD":  # a HEAD answer has no body
            yield body


def _request_id(environ: dict[str, Any]) -> str:
    return environ.setdefault("davbox.request_id", new_request_id())


def internal_error(environ: dict[str, Any], exc: BaseException) -> DAVError:
    """Log ``exc`` with a request id and return the 500 the client sees (no details)."""
    return _internal(environ, exc)


def _internal(environ: dict[str, Any], exc: BaseException) -> DAVError:
    request_id = _request_id(environ)
    _log.error("request %s failed", request_id, exc_info=exc)
    return DAVError(500, f"internal server error (request id {request_id})")
