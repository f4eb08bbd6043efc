"""The ownCloud/Nextcloud OCS share API, for share links: sync clients make links with it.

Endpoints (``N`` is 1 or 2; a trailing slash is allowed)::

    GET    /ocs/vN.php/apps/files_sharing/api/v1/shares        the caller's links
    POST   /ocs/vN.php/apps/files_sharing/api/v1/shares        make a link
    GET    /ocs/vN.php/apps/files_sharing/api/v1/shares/<id>   one link (a one-element list)
    PUT    /ocs/vN.php/apps/files_sharing/api/v1/shares/<id>   change it
    DELETE /ocs/vN.php/apps/files_sharing/api/v1/shares/<id>   revoke it

Contract:
- Reads ``PATH_INFO``, ``QUERY_STRING``, the body (form-encoded or JSON, at
  most 64 KiB: 413 beyond, also for chunked bodies; other types 415),
  ``HTTP_OCS_APIREQUEST``, ``HTTP_AUTHORIZATION``, ``HTTP_ACCEPT``,
  ``REMOTE_ADDR``, ``wsgi.url_scheme`` and ``HTTP_HOST``; sets
  ``wsgidav.auth.user_name`` (the access log's user). Links are made, changed
  and revoked only through ``ShareService`` (share right, ``links`` policies,
  ``LinkCreated``/``LinkChanged``/``LinkRevoked`` events with the client
  address).
- Every answer is an OCS envelope, ``ocs.meta`` (``status``, ``statuscode``,
  ``message``) and ``ocs.data``: XML by default, JSON with ``format=json`` or
  an ``Accept`` header naming JSON. XML is built with ElementTree and JSON
  with ``json``: user data is never pasted into markup.
- Status conventions are Nextcloud's: v1 answers HTTP 200 with statuscode 100
  on success and HTTP 200 with statuscode 400/403/404 on refusals; v2 answers
  statuscode 200 on success and the refusal's code as HTTP status too. In both
  versions these keep their HTTP status: 401 (statuscode 997, wrong or missing
  credentials), 404 for an unknown endpoint (statuscode 998), 405, 412 (no
  ``OCS-APIRequest: true`` header), 413, 415, 429 and 503 (with ``Retry-After``),
  500 (a policy could not be evaluated).
- CSRF: every request needs the header ``OCS-APIRequest: true``, as
  Nextcloud documents; without it the answer is 412 before credentials are
  looked at.
- Credentials: HTTP Basic through ``AccessService.authenticate``, the same
  rules as WebDAV: accounts under two-factor login only with app passwords,
  too many failures 429, an identity provider that cannot answer 503, wrong
  401; each refusal is a ``LoginRefused`` event (``via="ocs"``). Passwords and
  tokens are never logged.
- Links: ``shareType`` 3 (public link) only; other types get 403, garbage
  400. ``permissions`` 1 = read, 4 = drop (upload only, Nextcloud's file
  drop), 15 = write (31, which clients send, too); anything else 400. Shown
  back as 1, 4 or 15. ``publicUpload=true`` without ``permissions`` is write.
- ``expireDate`` is a day, ``YYYY-MM-DD`` (a trailing ``00:00:00`` is
  accepted): the link works through that whole day in UTC and stops at the
  next midnight UTC (ownCloud's documented meaning; Nextcloud stops it at the
  start of the day). Answers show ``expiration`` as ``YYYY-MM-DD 00:00:00``
  naming the last day the link works, the form clients parse.
- Who sees what: a list shows the caller's own usable links, with
  ``reshares=true`` also the links others made into mailboxes the caller
  manages; ``path`` (``/<mailbox>/<path>``, as in the WebDAV tree) keeps those
  on that item, with ``subfiles=true`` those on the items directly inside it.
  ``GET``/``PUT``/``DELETE`` of any other id (someone else's, revoked,
  expired, used up, outside an app password's mailboxes) is the same 404.
  Read-only app passwords may look, not change (403).
- Answers say whether a link has a password (``share_with`` is then a fixed
  placeholder string, which clients read as "has a password"), never the
  password. They carry the token, so ``Cache-Control: no-store``.
- Link URLs are ``<server.public_url>/s/<token>``, without ``public_url`` the
  scheme and host the request came in on; WebDAV through the link is at
  ``<url>/dav/``.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree as ET

from werkzeug.wrappers import Request, Response

from davbox import app_passwords, links
from davbox.access import AccessService, AppPasswordRequired
from davbox.accounts import AdminError
from davbox.compat import cloud
from davbox.config import Settings
from davbox.dav.authn import UNAVAILABLE, WRONG
from davbox.events import EventBus, LoginRefused, LoginSucceeded, request_context
from davbox.http import close_if_body_unread, status_line
from davbox.links import Link, LinkChange, LinkError
from davbox.paths import base_url
from davbox.policies.base import Principal
from davbox.providers.identity import ProviderUnavailable
from davbox.sharing import LinkRefused, ShareService, TargetNotFound, split_target
from davbox.throttle import Throttled

MAX_BODY = 64 * 1024
SHARE_TYPE_LINK = 3
#: Nextcloud's other share types (user, group, e-mail, federated, ...): refused with 403.
OTHER_SHARE_TYPES = frozenset({0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
#: OCS permission bits for each link permission (read; create only; read+update+create+delete).
PERMISSION_BITS = {"read": 1, "drop": 4, "write": 15}
_FROM_BITS = {1: "read", 4: "drop", 15: "write", 31: "write"}
#: What ``share_with`` holds for a link with a password (clients test it for being a string).
PASSWORD_SET = "(password set)"  # noqa: S105 (a marker, not a password)
FOLDER_MIMETYPE = "httpd/unix-directory"
NO_SUCH_SHARE = "Wrong share ID, share doesn't exist"
# Statuses that are about the request itself: the same HTTP status in v1 and v2.
_TRANSPORT = frozenset({401, 405, 412, 413, 415, 429, 500, 503})
_ROUTE = re.compile(r"^/ocs/v([12])\.php(/.*)?$")
_SHARES = "/apps/files_sharing/api/v1/shares"
_DAY = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[ T]00:00(?::00)?(?:Z|[+-]00:?00)?)?$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")
# XML 1.0 cannot carry these characters at all: they are replaced, not escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class OcsError(Exception):
    """A refusal: ``code`` is the OCS statuscode (and the HTTP status per version)."""

    def __init__(
        self, code: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or []


class OcsApp:
    """WSGI app for ``/ocs/...``: the share API for links; other OCS paths are 404."""

    def __init__(
        self,
        shares: ShareService,
        access: AccessService,
        settings: Settings,
        events: EventBus,
    ) -> None:
        self.shares = shares
        self.access = access
        self.settings = settings
        self.events = events
        self.challenge = f'Basic realm="{settings.auth.realm}", charset="UTF-8"'

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY
        found = _ROUTE.match(request.path)
        version = int(found.group(1)) if found else 2
        rest = (found.group(2) or "") if found else ""
        params = dict(request.args.items())
        fmt = _format(request, params)
        try:
            data = self._handle(request, environ, rest.rstrip("/"), params, found is not None)
        except OcsError as exc:
            return self._answer(
                environ, start_response, version, fmt, exc.code, exc.message, None, exc.headers
            )
        return self._answer(environ, start_response, version, fmt, 200, "OK", data)

    # -- the requests ---------------------------------------------------------

    def _handle(
        self,
        request: Request,
        environ: dict[str, Any],
        rest: str,
        params: dict[str, str],
        known: bool,
    ) -> Any:
        reading = request.method in ("GET", "HEAD")
        if known and reading and rest in ("/cloud/capabilities", "/cloud/user"):
            return self._cloud(rest, environ)
        if known and rest == "/core/getapppassword" and request.method == "GET":
            if request.headers.get("OCS-APIRequest", "").strip().lower() != "true":
                raise OcsError(412, "CSRF check failed: send 'OCS-APIRequest: true'")
            return self._app_password(environ)
        if not known or not (rest == _SHARES or rest.startswith(_SHARES + "/")):
            raise OcsError(998, "there is no such OCS endpoint on this server")
        if request.headers.get("OCS-APIRequest", "").strip().lower() != "true":
            raise OcsError(
                412, "CSRF check failed: OCS requests need the header 'OCS-APIRequest: true'"
            )
        principal = self._authenticate(environ)
        address = environ.get("REMOTE_ADDR", "")
        method = request.method
        share_id = rest[len(_SHARES) + 1 :]
        if not share_id:
            if method in ("GET", "HEAD"):
                return self._list(principal, params, environ)
            if method == "POST":
                params.update(_body(request, environ))
                return self._create(principal, params, environ, address)
            raise OcsError(405, "use GET or POST on /shares", [("Allow", "GET, HEAD, POST")])
        if share_id == "pending" and method in ("GET", "HEAD"):
            return []  # davbox has no shares between accounts: nothing waits to be accepted
        if method in ("GET", "HEAD"):
            return [self._share(self._visible(principal, share_id), environ)]
        if method == "DELETE":
            link = self._changeable(principal, share_id)
            self._service_call(
                lambda: self.shares.revoke(principal, link.id, address, request_context(environ))
            )
            return []
        if method == "PUT":
            params.update(_body(request, environ))
            link = self._changeable(principal, share_id)
            change = _change(params, link)
            if change.fields():
                link = self._service_call(
                    lambda: self.shares.update(
                        principal, link.id, change, address, request_context(environ)
                    )
                )
            return self._share(link, environ)
        raise OcsError(
            405, "use GET, PUT or DELETE on /shares/<id>", [("Allow", "GET, HEAD, PUT, DELETE")]
        )

    def _cloud(self, rest: str, environ: dict[str, Any]) -> Any:
        """``cloud/capabilities`` (credentials optional) and ``cloud/user`` (required)."""
        if rest == "/cloud/capabilities":
            if environ.get("HTTP_AUTHORIZATION"):
                self._authenticate(environ)
            return cloud.capabilities()
        principal = self._authenticate(environ)
        display_name, email = self.access.profile(principal.name)
        return cloud.user(principal, display_name, email)

    def _app_password(self, environ: dict[str, Any]) -> dict[str, str]:
        """Nextcloud's ``core/getapppassword``: trade a password login for an app password."""
        principal = self._authenticate(environ)
        if principal.credential_id is not None:
            self._emit(environ, principal.name, "is-app-password", 403)
            raise OcsError(403, "this login is an app password already")
        label = f"getapppassword {datetime.now(UTC):%Y-%m-%d %H.%M.%S}"
        try:
            password = app_passwords.create(self.shares.db, principal.name, label)
        except AdminError as exc:
            raise OcsError(409, str(exc)) from None
        context = {**request_context(environ), "actor": principal.name}
        self.events.emit(LoginSucceeded(**context, method="app-password", via="ocs"))
        return {"apppassword": password}

    def _list(
        self, principal: Principal, params: dict[str, str], environ: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if _flag(params.get("shared_with_me")):
            return []  # links are for people without an account; nothing is shared *with* one
        managed = self._managed(principal) if _flag(params.get("reshares")) else set()
        wanted: tuple[str, str] | None = None
        if params.get("path"):
            mailbox, path = _target(params["path"])
            if mailbox not in self.access.mailboxes_for(principal):
                raise OcsError(404, "Wrong path, file/folder doesn't exist")
            wanted = (mailbox, path)
        subfiles = _flag(params.get("subfiles"))
        mine = None if managed else principal.name
        found = []
        for link in links.list_links(self.shares.db, created_by=mine):
            if link.state() != "active" or not self._in_scope(principal, link):
                continue
            if link.created_by != principal.name and link.mailbox not in managed:
                continue
            if wanted is not None:
                where = (link.mailbox, _parent(link.path) if subfiles else link.path)
                if where != wanted or (subfiles and link.path == "/"):
                    continue
            found.append(link)
        return [self._share(link, environ) for link in found]

    def _create(
        self, principal: Principal, params: dict[str, str], environ: dict[str, Any], address: str
    ) -> dict[str, Any]:
        share_type = params.get("shareType", "").strip()
        number = int(share_type) if share_type.isdigit() and len(share_type) < 4 else -1
        if number in OTHER_SHARE_TYPES:
            raise OcsError(
                403,
                f"davbox makes public links only (shareType 3), not shareType {share_type}:"
                " to share with an account, give it a role in the mailbox",
            )
        if number != SHARE_TYPE_LINK:
            raise OcsError(400, "Unknown share type: give shareType=3 (a public link)")
        if not params.get("path"):
            raise OcsError(404, "Please specify a file or folder path")
        if _flag(params.get("hideDownload")):
            raise OcsError(400, "davbox cannot hide downloads of a link (hideDownload)")
        if "permissions" in params and params["permissions"] != "":
            permission = _permission(params["permissions"])
        else:
            permission = "write" if _flag(params.get("publicUpload")) else "read"
        expires_at = _expiry(params["expireDate"]) if params.get("expireDate") else None
        mailbox, path = _target(params["path"])
        try:
            link, _ = self.shares.create(
                principal,
                mailbox + path,
                permission,
                password=params.get("password") or None,
                expires_at=expires_at,
                label=params.get("label", params.get("name", "")),
                note=params.get("note", ""),
                client=address,
                request=request_context(environ),
            )
        except LinkRefused as exc:
            raise OcsError(exc.status, str(exc)) from None
        except TargetNotFound as exc:
            raise OcsError(404, f"Wrong path: {exc}") from None
        except LinkError as exc:
            raise OcsError(400, str(exc)) from None
        return self._share(link, environ)

    # -- who may see and change which link ------------------------------------

    def _visible(self, principal: Principal, share_id: str) -> Link:
        """The link if the caller may see it (theirs, or in a mailbox they manage), else 404."""
        if not share_id.isdigit() or len(share_id) > 18:
            raise OcsError(404, NO_SUCH_SHARE)
        try:
            link = links.get(self.shares.db, int(share_id))
        except LinkError:
            raise OcsError(404, NO_SUCH_SHARE) from None
        if (
            link.state() != "active"
            or not self._in_scope(principal, link)
            or not self.shares.may_manage(principal, link)
        ):
            raise OcsError(404, NO_SUCH_SHARE)
        return link

    def _changeable(self, principal: Principal, share_id: str) -> Link:
        link = self._visible(principal, share_id)
        if principal.read_only:
            raise OcsError(
                403, "this app password may only read; it cannot change or delete share links"
            )
        return link

    @staticmethod
    def _service_call(action: Callable[[], Any]) -> Any:
        """Run a ShareService call on a visible link, turning its refusals into OCS errors."""
        try:
            return action()
        except LinkRefused as exc:
            raise OcsError(exc.status, str(exc)) from None
        except TargetNotFound as exc:  # the creator has lost the mailbox
            raise OcsError(403, str(exc)) from None
        except LinkError as exc:
            if str(exc).startswith("there is no link"):
                raise OcsError(404, NO_SUCH_SHARE) from None
            raise OcsError(400, str(exc)) from None

    def _managed(self, principal: Principal) -> set[str]:
        return {
            name
            for name, box in self.access.mailboxes_for(principal).items()
            if "manager" in box.roles
        }

    @staticmethod
    def _in_scope(principal: Principal, link: Link) -> bool:
        """An app password limited to some mailboxes sees only links into those."""
        return principal.scope is None or link.mailbox in principal.scope

    # -- credentials ----------------------------------------------------------

    def _authenticate(self, environ: dict[str, Any]) -> Principal:
        header = environ.get("HTTP_AUTHORIZATION", "").strip()
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            reason = (
                "only Basic authentication is supported" if header else "authentication required"
            )
            raise OcsError(997, reason, [("WWW-Authenticate", self.challenge)])
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            self._emit(environ, "", "malformed", 401)
            raise OcsError(
                997, "malformed Authorization header", [("WWW-Authenticate", self.challenge)]
            )
        address = environ.get("REMOTE_ADDR", "")
        try:
            principal = self.access.authenticate(username, password, address)
        except AppPasswordRequired:
            principal, outcome = None, "app-password-required"
        except Throttled as exc:
            self._emit(environ, username, "throttled", 429)
            raise OcsError(429, str(exc), [("Retry-After", str(exc.retry_after))]) from None
        except ProviderUnavailable as exc:
            self._emit(environ, username, "unavailable", 503)
            raise OcsError(503, UNAVAILABLE, [("Retry-After", str(exc.retry_after))]) from None
        else:
            outcome = "wrong"
        if principal is None:
            # The same answer for both: it must not confirm an account password.
            self._emit(environ, username, outcome, 401)
            raise OcsError(997, WRONG, [("WWW-Authenticate", self.challenge)])
        environ["wsgidav.auth.user_name"] = principal.name
        return principal

    def _emit(self, environ: dict[str, Any], username: str, outcome: str, status: int) -> None:
        context = {**request_context(environ), "actor": username}
        self.events.emit(
            LoginRefused(
                **context,
                outcome=outcome,
                status=status,
                via="ocs",
            )
        )

    # -- answers ----------------------------------------------------------------

    def _share(self, link: Link, environ: dict[str, Any]) -> dict[str, Any]:
        """A link as the fields Nextcloud's share API gives (never its password)."""
        token = links.token_of(self.shares.db, link.id)
        owner = link.created_by or ""
        name = link.path.rstrip("/").rsplit("/", 1)[-1] or link.mailbox
        if link.is_folder:
            mimetype = FOLDER_MIMETYPE
        else:
            mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        password_mark = PASSWORD_SET if link.has_password else None
        return {
            "id": str(link.id),
            "share_type": SHARE_TYPE_LINK,
            "uid_owner": owner,
            "displayname_owner": owner or "administrator",
            "permissions": PERMISSION_BITS[link.permission],
            "can_edit": True,
            "can_delete": True,
            "stime": int(link.created_at.timestamp()),
            "parent": None,
            "expiration": _last_day(link.expires_at),
            "token": token,
            "uid_file_owner": owner,
            "displayname_file_owner": owner or "administrator",
            "note": link.note,
            "label": link.label,
            "name": link.label,
            "path": "/" + link.mailbox + (link.path if link.path != "/" else ""),
            "item_type": "folder" if link.is_folder else "file",
            "mimetype": mimetype,
            "file_target": "/" + name,
            "share_with": password_mark,
            "share_with_displayname": password_mark,
            "url": f"{self._base(environ)}/s/{token}",
            "mail_send": 0,
            "hide_download": 0,
        }

    def _base(self, environ: dict[str, Any]) -> str:
        """``server.public_url``, else the scheme and host this request came in on."""
        if self.settings.server.public_url:
            return base_url(self.settings)
        host = environ.get("HTTP_HOST", "")
        if not _HOST.match(host):
            return base_url(self.settings)
        return f"{environ.get('wsgi.url_scheme', 'http')}://{host}"

    def _answer(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        version: int,
        fmt: str,
        code: int,
        message: str,
        data: Any = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Iterable[bytes]:
        ok = code == 200
        if code == 997:
            http = 401
        elif code == 998:
            http = 404
        elif ok or code in _TRANSPORT or version == 2:
            http = code
        else:
            http = 200
        statuscode = 100 if ok and version == 1 else code
        meta: dict[str, Any] = {
            "status": "ok" if ok else "failure",
            "statuscode": statuscode,
            "message": "OK" if ok else message,
        }
        if version == 1:
            meta.update(totalitems="", itemsperpage="")
        envelope = {"ocs": {"meta": meta, "data": [] if data is None else data}}
        if fmt == "json":
            body, content_type = _json(envelope), "application/json; charset=utf-8"
        else:
            body, content_type = _xml(envelope), "application/xml; charset=utf-8"
        all_headers = [
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            *(headers or []),
        ]
        close_if_body_unread(environ, all_headers)
        response = Response(body, status=status_line(http), headers=all_headers)
        return response(environ, start_response)


# -- reading requests -------------------------------------------------------------


def _format(request: Request, params: dict[str, str]) -> str:
    """``format=json|xml`` wins; else the first Accept entry naming json or xml; else xml."""
    asked = params.get("format", "").lower()
    if asked in ("json", "xml"):
        return asked
    for entry in request.headers.get("Accept", "").split(","):
        kind = entry.split(";")[0].strip().lower()
        if "json" in kind:
            return "json"
        if "xml" in kind:
            return "xml"
    return "xml"


def _body(request: Request, environ: dict[str, Any]) -> dict[str, str]:
    """The form-encoded or JSON body as strings; 413 past ``MAX_BODY``, never cut short."""
    raw = _read_body(request, environ)
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise OcsError(400, "the request body is not UTF-8") from None
    if request.mimetype == "application/json":
        try:
            loaded = json.loads(text)
        except ValueError:
            raise OcsError(400, "the request body is not valid JSON") from None
        if not isinstance(loaded, dict):
            raise OcsError(400, "the JSON body must be an object")
        return {str(key): _text(value) for key, value in loaded.items()}
    if request.mimetype in ("", "application/x-www-form-urlencoded"):
        return dict(parse_qsl(text, keep_blank_values=True))
    raise OcsError(415, "send the parameters form-encoded or as JSON")


def _read_body(request: Request, environ: dict[str, Any]) -> bytes:
    """Read the whole body (cheroot ends chunked bodies) or refuse it unread when too big."""
    length = request.content_length
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if length is not None and length > MAX_BODY and not chunked:
        raise OcsError(413, f"OCS request bodies are limited to {MAX_BODY // 1024} KiB")
    stream = environ["wsgi.input"]
    wanted = MAX_BODY + 1 if chunked or length is None else length
    parts: list[bytes] = []
    size = 0
    while size < wanted:
        part = stream.read(min(wanted - size, 16 * 1024))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > MAX_BODY:
        raise OcsError(413, f"OCS request bodies are limited to {MAX_BODY // 1024} KiB")
    environ["wsgidav.all_input_read"] = 1  # read to its end: no Connection: close needed
    return b"".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


def _target(path: str) -> tuple[str, str]:
    try:
        return split_target(path)
    except LinkError as exc:
        raise OcsError(404, f"Wrong path: {exc}") from None


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _permission(value: str) -> str:
    try:
        bits = int(value.strip())
    except ValueError:
        bits = -1
    if bits not in _FROM_BITS:
        raise OcsError(
            400,
            f"permissions {value!r} are not possible for a link: use 1 (read),"
            " 4 (upload only, file drop) or 15 (read and write)",
        )
    return _FROM_BITS[bits]


def _expiry(value: str) -> datetime:
    """``YYYY-MM-DD`` -> the moment the link stops: the next midnight UTC."""
    found = _DAY.match(value.strip())
    try:
        day = date.fromisoformat(found.group(1)) if found else None
    except ValueError:
        day = None
    if day is None:
        raise OcsError(400, "Invalid date, date format must be YYYY-MM-DD")
    if day < datetime.now(UTC).date():
        raise OcsError(400, "Expiration date is in the past")
    return datetime.combine(day, time(), UTC) + timedelta(days=1)


def _last_day(expires_at: datetime | None) -> str | None:
    """The last day a link works, as clients read it: ``YYYY-MM-DD 00:00:00``."""
    if expires_at is None:
        return None
    last = (expires_at.astimezone(UTC) - timedelta(microseconds=1)).date()
    return f"{last.isoformat()} 00:00:00"


_UPDATABLE = ("permissions", "publicUpload", "password", "expireDate", "label", "note")


def _change(params: dict[str, str], link: Link) -> LinkChange:
    """The fields of a PUT; an empty password or expireDate removes it."""
    if not any(key in params for key in (*_UPDATABLE, "hideDownload")):
        raise OcsError(400, "Wrong or no update parameter given")
    permission = None
    if params.get("permissions"):
        permission = _permission(params["permissions"])
    elif "publicUpload" in params:
        permission = "write" if _flag(params["publicUpload"]) else "read"
    if _flag(params.get("hideDownload")):
        raise OcsError(400, "davbox cannot hide downloads of a link (hideDownload)")
    password = params.get("password")
    set_password = password is not None and password != PASSWORD_SET
    expiry = params.get("expireDate")
    change = LinkChange(
        permission=permission if permission != link.permission else None,
        set_password=set_password,
        password=password or None,
        set_expiry=expiry is not None,
        expires_at=_expiry(expiry) if expiry else None,
        label=params.get("label"),
        note=params.get("note"),
    )
    return change


# -- writing answers ----------------------------------------------------------------


def _json(envelope: dict[str, Any]) -> bytes:
    text = json.dumps(envelope, separators=(",", ":"))
    # As PHP's JSON_HEX_TAG: no markup characters even inside strings.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def _xml(envelope: dict[str, Any]) -> bytes:
    root = ET.Element("ocs")
    for key, value in envelope["ocs"].items():
        _xml_value(root, key, value)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _xml_value(parent: ET.Element, key: str, value: Any) -> None:
    """PHP's OCS writer: lists as <element>s, None empty, True "1", False empty."""
    node = ET.SubElement(parent, key)
    if isinstance(value, dict):
        for child_key, child in value.items():
            _xml_value(node, child_key, child)
    elif isinstance(value, list):
        for item in value:
            _xml_value(node, "element", item)
    elif isinstance(value, bool):
        node.text = "1" if value else ""
    elif value is not None:
        node.text = _NOT_XML.sub("\ufffd", str(value))
