"""The one place that maps URL prefixes to apps, and the outermost safety net.

Contract:
- Behind a trusted proxy (``server.trusted_proxies``) ``REMOTE_ADDR`` is first
  set to the forwarded client address (``davbox.proxies``).
- Request paths must be UTF-8 without control characters (else 400); they and
  the Destination header are normalised to Unicode NFC before any app sees
  them, so NFD names from macOS and NFC names from Windows address one file.
- ``OPTIONS /`` and ``OPTIONS *`` answer ``DAV: 1,2`` and ``MS-Author-Via: DAV``
  (Windows probes the server root before mapping a drive).
- ``/dav/...`` goes to the WebDAV app with ``SCRIPT_NAME=/dav``; share links
  over WebDAV (``/s/<token>/dav/...``, ``/public.php/webdav/...``) to the link
  WebDAV app (``davbox.dav.links``); ``/ocs/...`` to the OCS share API
  (``davbox.ocs``); everything else to the web pages
  (``davbox.admin_ui.web``), which answer 404 for what they do not know.
- Only PUT may carry a body over 1 MiB (WsgiDAV parses the others in memory): 413.
- Reason phrases are always the standard ones (WsgiDAV says "Status" for some).
- An exception that escapes an app is logged and answered 500 with a request
  id, never a traceback. With ``access_log`` on, one line per request is
  logged: client, user, method, path, status, duration (no query, no secrets:
  share-link tokens in paths are shown as ``/s/-``, registration links'
  as ``/register/verify/-``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from davbox.compat.chunking import UPLOADS_PREFIX
from davbox.compat.status import status_app
from davbox.dav.links import is_link_path
from davbox.http import drop_invalid_range, new_request_id, plain_response, status_line
from davbox.providers.storage.sealed import ContentTampered
from davbox.proxies import ClientAddress

_log = logging.getLogger("davbox.access")
_err = logging.getLogger("davbox.errors")

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
DAV_PREFIX = "/dav"
WEBDAV_PREFIX = "/remote.php/webdav"  # ownCloud's (and old Nextcloud's) WebDAV URL
FILES_PREFIX = "/remote.php/dav/files"  # Nextcloud's: .../files/<account>/
# WsgiDAV reads PROPFIND, PROPPATCH and LOCK bodies into memory: cap them.
MAX_XML_BODY = 1024 * 1024
# Share-link tokens are secrets: the access log shows /s/- instead.
_LINK_TOKEN = re.compile(r"/s/[^/]+")
# So are registration links: /register/verify/-.
_REGISTER_TOKEN = re.compile(r"/register/verify/[^/]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Dispatcher:
    def __init__(
        self,
        dav_app: App,
        web_app: App,
        *,
        link_dav: App | None = None,
        ocs: App | None = None,
        uploads: App | None = None,
        access_log: bool = True,
        trusted_proxies: list[str] | None = None,
    ) -> None:
        self.client_address = ClientAddress(trusted_proxies or [])
        self.dav_app = dav_app
        self.web_app = web_app
        self.link_dav = link_dav
        self.ocs = ocs
        self.uploads = uploads
        self.access_log = access_log

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        started = time.monotonic()
        outcome: dict[str, Any] = {"status": "-"}
        environ["davbox.request_id"] = new_request_id()
        self.client_address.apply(environ)
        drop_invalid_range(environ)
        requested = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        # WSGI gives the path's UTF-8 bytes as latin-1 text: log it readable.
        with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
            requested = requested.encode("latin-1").decode("utf-8")

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            code = int(status[:3])
            if status[4:].strip() in ("", "Status"):
                status = status_line(code)
            outcome["status"] = code
            return start_response(status, headers, exc_info)

        try:
            yield from self._route(environ, recording_start_response)
        except Exception as exc:
            request_id = environ.setdefault("davbox.request_id", new_request_id())
            if isinstance(exc, ContentTampered):  # recorded and logged where it was found
                _err.error(
                    "request %s cut off: a stored file failed its integrity check", request_id
                )
            else:
                _err.exception("request %s failed", request_id)
            if outcome["status"] != "-":
                outcome["status"] = f"{outcome['status']} cut"
                # The answer has begun: only cutting the connection tells the
                # client that the body is not whole (the server does that).
                raise
            if outcome["status"] == "-":
                body = f"500 Internal Server Error (request id {request_id})\n".encode()
                recording_start_response(
                    "500 Internal Server Error",
                    [
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                yield body
        finally:
            if self.access_log:
                _log.info(
                    '%s %s "%s %s" %s %.1fms',
                    environ.get("REMOTE_ADDR", "-"),
                    environ.get("wsgidav.auth.user_name", "-"),
                    environ.get("REQUEST_METHOD"),
                    _REGISTER_TOKEN.sub(
                        "/register/verify/-",
                        _LINK_TOKEN.sub("/s/-", requested),
                    ),
                    outcome["status"],
                    (time.monotonic() - started) * 1000,
                )

    def _route(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        try:
            path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return plain_response(
                environ, start_response, 400, "the request path is not valid UTF-8"
            )
        if _CONTROL.search(path):
            return plain_response(
                environ, start_response, 400, "the request path contains control characters"
            )
        path = unicodedata.normalize("NFC", path)
        environ["PATH_INFO"] = path.encode("utf-8").decode("latin-1")
        if "HTTP_DESTINATION" in environ:
            try:
                environ["HTTP_DESTINATION"] = _nfc_url(environ["HTTP_DESTINATION"])
            except (UnicodeDecodeError, ValueError):
                return plain_response(
                    environ, start_response, 400, "the Destination header is not a valid URL"
                )
        if not environ.get("HTTP_HOST"):
            # HTTP/1.0 clients may omit Host; WsgiDAV needs it to read Destination.
            environ["HTTP_HOST"] = (
                f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
            )
        method = environ.get("REQUEST_METHOD", "")
        if method != "PUT" and _declared_length(environ) > MAX_XML_BODY:
            return plain_response(
                environ, start_response, 413, f"request bodies of {method} are limited to 1 MiB"
            )

        if method == "OPTIONS" and path in ("/", "*", ""):
            return _server_options(start_response)
        if self.uploads is not None and path.startswith(UPLOADS_PREFIX + "/"):
            account = path[len(UPLOADS_PREFIX) + 1 :].split("/", 1)[0]
            uploads_at = f"{UPLOADS_PREFIX}/{account}"
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + uploads_at
            environ["PATH_INFO"] = environ["PATH_INFO"][len(uploads_at.encode()) :] or "/"
            environ["davbox.dav_user"] = account
            return self.uploads(environ, start_response)
        prefix = dav_prefix(path)
        if prefix is not None:
            # One WebDAV app under three names: inside it, everything is at /dav
            # (WsgiDAV's mount path, Destination headers, audit records); hrefs
            # in answers use the name the client used (davbox.href_prefix).
            base = environ.get("SCRIPT_NAME", "").rstrip("/")
            environ["SCRIPT_NAME"] = base + DAV_PREFIX
            environ["PATH_INFO"] = environ["PATH_INFO"][len(prefix.encode()) :] or "/"
            if prefix != DAV_PREFIX:
                environ["davbox.href_prefix"] = prefix
                if "HTTP_DESTINATION" in environ:
                    environ["HTTP_DESTINATION"] = _rebase(
                        environ["HTTP_DESTINATION"], base + prefix, base + DAV_PREFIX
                    )
            if prefix.startswith(FILES_PREFIX):
                # Nextcloud's form names the account: only its own tree is there.
                environ["davbox.dav_user"] = prefix[len(FILES_PREFIX) + 1 :]
            return self.dav_app(environ, start_response)
        if path == "/status.php":
            return status_app(environ, start_response)
        if self.link_dav is not None and is_link_path(path):
            return self.link_dav(environ, start_response)
        if self.ocs is not None and path.startswith("/ocs/"):
            return self.ocs(environ, start_response)
        return self.web_app(environ, start_response)


def dav_prefix(path: str) -> str | None:
    """Which members' WebDAV prefix ``path`` is under, or None.

    ``/dav``, ownCloud's ``/remote.php/webdav`` and Nextcloud's
    ``/remote.php/dav/files/<account>``: the same mailbox tree under each.
    """
    for prefix in (DAV_PREFIX, WEBDAV_PREFIX):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    if path.startswith(FILES_PREFIX + "/"):
        account = path[len(FILES_PREFIX) + 1 :].split("/", 1)[0]
        if account:
            return f"{FILES_PREFIX}/{account}"
    return None


def _rebase(url: str, old: str, new: str) -> str:
    """``url`` with its path's leading ``old`` (unquoted) replaced by ``new``."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if path != old and not path.startswith(old + "/"):
        return url
    return urlunsplit(parts._replace(path=quote(new + path[len(old) :], safe="/!$&'()*+,;=:@")))


def _nfc_url(url: str) -> str:
    """The same URL with its path in Unicode NFC (macOS sends NFD names)."""
    parts = urlsplit(url)
    path = unquote(parts.path, errors="strict")
    nfc = unicodedata.normalize("NFC", path)
    if nfc == path:
        return url
    return urlunsplit(parts._replace(path=quote(nfc, safe="/!$&'()*+,;=:@")))


def _declared_length(environ: dict[str, Any]) -> int:
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _server_options(start_response: Callable[..., Any]) -> list[bytes]:
    start_response(
        "200 OK",
        [
            ("DAV", "1, 2"),
            ("MS-Author-Via", "DAV"),
            ("Allow", "OPTIONS, GET, HEAD, PROPFIND"),
            ("Content-Length", "0"),
        ],
    )
    return [b""]
