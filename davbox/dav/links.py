"""WebDAV for share links: ``/s/<token>/dav/...`` and Nextcloud's ``/public.php/webdav/...``.

Contract:
- ``/s/<token>/dav/...``: the token is in the path; a link password comes as
  the Basic password (any user name). ``/public.php/webdav/...``: the token is
  the Basic user name and the link password the Basic password (what
  Nextcloud clients send).
- Unknown, revoked, expired and used-up tokens get the same 404 (on
  ``/public.php`` the same 401, since the token is the user name); a missing or
  wrong link password 401 with a challenge; too many wrong passwords 429.
- A link's requests run as principal ``link-<id>`` with the link's
  permission as its mailbox role (read → reader, drop → dropper, write →
  member) inside the link's folder only: the path is rewritten to the
  canonical ``/<mailbox>/<path>`` (so locks and properties are shared with
  members) and hrefs in answers are written back under the link's prefix.
  The mailbox name and the folder's place never show.
- Drop and write links take changes only inside their upload window; a read
  link's file downloads count against ``max_downloads``, judged by what is
  sent (a 200, or a 206 from byte 0: a Range that does not start at 0
  continues a download), so no Range or If-Range form gets a whole file for
  free; each request is a ``LinkUsed`` event carrying the link id. Wrong link
  passwords and throttled guesses are ``LoginRefused`` events; uploads outside
  the window and downloads the limit no longer allows (parallel ones) are
  ``AccessRefused`` events (actor ``link-<id>``).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from davbox import links
from davbox.dav.audit import mark_audited
from davbox.events import (
    AccessRefused,
    EventBus,
    LinkUsed,
    LoginRefused,
    actor_details,
    request_context,
)
from davbox.http import plain_response
from davbox.links import Link
from davbox.sharing import LinkNotFound, LinkPasswordRequired, ShareService
from davbox.throttle import Throttled

NOT_FOUND = "this link does not exist (any more)"
UPLOAD_WINDOW_OVER = "this link no longer accepts uploads"
DESTINATION_OUTSIDE = "the destination must be inside this link"
PUBLIC_PREFIX = "/public.php/webdav"
_LINK_PATH = re.compile(r"^/s/([A-Za-z0-9_-]{1,128})/dav(/.*)?$")
_CHANGING = frozenset({"PUT", "MKCOL", "LOCK", "MOVE", "COPY", "DELETE", "PROPPATCH"})


@dataclass(frozen=True)
class LinkMount:
    """Where a link's folder sits: ``prefix`` as the client sees it, ``root`` canonically."""

    prefix: str
    root: str
    link: Link

    def href(self, canonical: str) -> str:
        """The client's URL path for a canonical path inside the link."""
        return self.prefix + (canonical[len(self.root) :] or "/")


def is_link_path(path: str) -> bool:
    return (
        bool(_LINK_PATH.match(path))
        or path == PUBLIC_PREFIX
        or path.startswith(PUBLIC_PREFIX + "/")
    )


class LinkDavMiddleware:
    """Opens the link of a request, then hands it to the link WebDAV app, rewritten."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        shares: ShareService,
        events: EventBus,
        realm: str,
    ) -> None:
        self.app = app
        self.shares = shares
        self.events = events
        self.challenge = f'Basic realm="{realm} link", charset="UTF-8"'

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        raw = environ["PATH_INFO"]  # WSGI: UTF-8 bytes as latin-1 text
        path = raw.encode("latin-1").decode("utf-8")
        user, password = _basic(environ)
        if path == PUBLIC_PREFIX or path.startswith(PUBLIC_PREFIX + "/"):
            if user is None:
                return self._challenge(environ, start_response, "log in with the link's token")
            token, prefix, rest = user, PUBLIC_PREFIX, path[len(PUBLIC_PREFIX) :]
        else:
            found = _LINK_PATH.match(path)
            if found is None:
                return plain_response(environ, start_response, 404, NOT_FOUND)
            token, rest = found.group(1), found.group(2) or ""
            prefix = f"/s/{token}/dav"
        address = environ.get("REMOTE_ADDR", "")
        try:
            opened = self.shares.open(token, password, address)
        except LinkNotFound:
            if prefix == PUBLIC_PREFIX:
                return self._challenge(environ, start_response, "wrong link or password")
            return plain_response(environ, start_response, 404, NOT_FOUND)
        except LinkPasswordRequired as exc:
            if exc.wrong:
                self._login_refused(environ, token, "wrong", 401)
            return self._challenge(environ, start_response, str(exc))
        except Throttled as exc:
            self._login_refused(environ, token, "throttled", 429)
            return plain_response(
                environ, start_response, 429, str(exc), [("Retry-After", str(exc.retry_after))]
            )
        link = opened.link
        mount = LinkMount(prefix, "/" + link.mailbox + link.path.rstrip("/"), link)
        method = environ.get("REQUEST_METHOD", "")
        environ["wsgidav.auth.user_name"] = opened.principal.name
        environ["davbox.principal"] = opened.principal
        where = {"mailbox": link.mailbox, "path": link.path.rstrip("/") + rest}
        if link.needs_code:  # a code is entered on the link's page; WebDAV cannot ask for it
            return self._refuse(
                environ,
                start_response,
                (link.mailbox, where["path"] if link.is_folder else link.path),
                "one-time-code",
                "this link asks for a one-time code: open it in a web browser",
            )
        self.events.emit(
            LinkUsed(**request_context(environ), **where, link_id=link.id, method=method)
        )
        if not link.is_folder and rest.strip("/"):
            return plain_response(environ, start_response, 404, NOT_FOUND)
        if method in _CHANGING and link.permission != "read" and not link.accepts_uploads():
            return self._refuse(
                environ,
                start_response,
                (link.mailbox, where["path"]),
                "link-upload-window",
                UPLOAD_WINDOW_OVER,
            )
        counting = method == "GET" and self._limited_file(link, rest)

        environ["PATH_INFO"] = (mount.root + rest).encode("utf-8").decode("latin-1")
        environ["SCRIPT_NAME"] = ""
        if "HTTP_DESTINATION" in environ:
            destination = _rewrite_destination(environ["HTTP_DESTINATION"], mount)
            if destination is None:
                return self._refuse(
                    environ,
                    start_response,
                    (link.mailbox, where["path"]),
                    "link-destination",
                    DESTINATION_OUTSIDE,
                )
            environ["HTTP_DESTINATION"] = destination
        environ["davbox.mailboxes"] = opened.mailboxes
        environ["davbox.link"] = mount
        status: list[int] = []
        used_up: list[list[bytes]] = []
        lock_answer = method in ("LOCK", "PROPFIND")

        def recording_start_response(code: str, headers: list[Any], exc_info: Any = None) -> Any:
            status.append(int(code[:3]))
            if (
                counting
                and exc_info is None
                and _sends_first_byte(status[0], headers)
                and not links.count_download(self.shares.db, link.id)
            ):
                # Used up meanwhile (parallel downloads): the 404 of any unusable link,
                # recorded as that refusal (not as the download the layer inside began).
                self.events.emit(
                    AccessRefused(
                        **request_context(environ),
                        **where,
                        operation="read",
                        status=404,
                        rule="link-max-downloads",
                        reason="the link's downloads are used up",
                    )
                )
                mark_audited(environ)
                used_up.append(plain_response(environ, start_response, 404, NOT_FOUND))
                return lambda data: None
            if lock_answer or status[0] >= 400:  # rewritten below: the length changes
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            return start_response(code, headers, exc_info)

        answer = self.app(environ, recording_start_response)
        return _hide_place(answer, mount, status, used_up, lock_answer=lock_answer)

    def _limited_file(self, link: Link, rest: str) -> bool:
        """Whether a GET here fetches a file of a link with a download limit."""
        if link.max_downloads is None:
            return False
        parts = [p for p in (link.path + rest).split("/") if p]
        return os.path.isfile(self.shares.storage.mailbox_dir(link.storage_key).joinpath(*parts))

    def _refuse(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        where: tuple[str, str],
        rule: str,
        reason: str,
    ) -> list[bytes]:
        """403 with the reason, recorded as an ``access-refused`` event of the link."""
        self.events.emit(
            AccessRefused(
                **request_context(environ),
                mailbox=where[0],
                path=where[1],
                operation=environ.get("REQUEST_METHOD", "").lower(),
                status=403,
                rule=rule,
                reason=reason,
            )
        )
        return plain_response(environ, start_response, 403, reason)

    def _login_refused(self, environ: dict[str, Any], token: str, outcome: str, code: int) -> None:
        """A wrong or throttled link password, as the link's pages report it too."""
        link = links.find(self.shares.db, token)
        if link is not None:
            self.events.emit(
                LoginRefused(
                    **(request_context(environ) | actor_details(ShareService.principal_for(link))),
                    mailbox=link.mailbox,
                    outcome=outcome,
                    status=code,
                    via="link",
                )
            )

    def _challenge(
        self, environ: dict[str, Any], start_response: Callable[..., Any], reason: str
    ) -> list[bytes]:
        return plain_response(
            environ, start_response, 401, reason, [("WWW-Authenticate", self.challenge)]
        )


def _basic(environ: dict[str, Any]) -> tuple[str | None, str | None]:
    scheme, _, value = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user or None, password) if sep else (None, None)


def _rewrite_destination(url: str, mount: LinkMount) -> str | None:
    """A Destination under the link's prefix, as the canonical URL WsgiDAV resolves."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not (path == mount.prefix or path.startswith(mount.prefix + "/")):
        return None
    canonical = mount.root + path[len(mount.prefix) :]
    return urlunsplit(parts._replace(path=quote(canonical, safe="/!$&'()*+,;=:@")))


def _sends_first_byte(code: int, headers: list[tuple[str, str]]) -> bool:
    """A whole file (200) or a part from byte 0 (206 with ``Content-Range: bytes 0-...``)."""
    if code == 200:
        return True
    ranges = [v for k, v in headers if k.lower() == "content-range"]
    return code == 206 and bool(ranges) and re.match(r"^\s*bytes\s+0-", ranges[0]) is not None


def _hide_place(
    body: Iterable[bytes],
    mount: LinkMount,
    status: list[int],
    used_up: list[list[bytes]],
    *,
    lock_answer: bool,
) -> Iterable[bytes]:
    """Answers name paths canonically (lock roots, error messages, refusal reasons that
    name the mailbox): show them as the link's URL and "this folder" instead.

    Only lock answers (LOCK, PROPFIND lockdiscovery) and error bodies are
    touched, never file content. A download found used up when its answer
    started (``used_up``) sends that 404 instead of the file.
    """
    link = mount.link
    swaps = [
        (b">" + quote(mount.root).encode(), b">" + quote(mount.prefix).encode()),
        (quote(mount.root).encode(), quote(mount.prefix).encode()),
        (mount.root.encode(), mount.prefix.encode()),
        (f"mailbox '{link.mailbox}'".encode(), b"this folder"),
    ]
    try:
        for chunk in body:
            if used_up:
                break
            if (status and status[0] >= 400) or (lock_answer and b"lockroot" in chunk):
                for old, new in swaps:
                    chunk = chunk.replace(old, new)
            yield chunk
        if used_up:
            yield from used_up[0]
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
