"""The browser side of share links: the ``/s/<token>`` pages and their downloads.

Routes (``RULES``, served by ``WebApp``; ``/s/<token>/dav/`` is WebDAV's):

- ``/s/<token>``: a **read** link to a folder lists it (files and subfolders
  with sizes and dates), to a file shows the file with a download button; a
  **drop** link shows only the upload page; a **write** link the listing and
  the upload form. A link with a password first asks for it (POST with CSRF,
  ``ShareService.open``: throttled, 429 with Retry-After), then remembers it
  in a signed cookie (``link_access``). Label and note are shown.
- ``/s/<token>/files/<sub>``: a folder below the link (its listing) or a
  file (sent as an attachment; one download counted unless the request is
  for a byte range that does not start at 0).
- ``/s/<token>/zip[/<sub>]``: the folder as one streamed zip (one download).
- ``/s/<token>/uploads...``: the resumable upload API (``link_api``).

Guarantees:
- Unknown, revoked, expired and used-up tokens, paths outside the link and
  everything a drop link may not see get the one 404 page, byte for byte the
  same, after no more work than the token lookup. The token is never shown
  on it (the dispatcher's access log shows ``/s/-``; events name links by id).
- Everything a link does is judged by the policy engine as the link's
  principal (``ShareService.principal_for``) in its mailbox role; refusals
  are ``AccessRefused`` events with actor ``link-<id>``; page views,
  downloads and zips are ``LinkViewed`` and ``LinkDownloaded`` events.
- Pages with the upload form allow scripts and fetches from this origin only
  (``script-src 'self'; connect-src 'self'``); the others allow no script.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import quote

from werkzeug.routing import Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Response

from davbox import links
from davbox.admin_ui.downloads import ZipFile, file_response, zip_response
from davbox.admin_ui.link_access import Item, LinkGate, Visit
from davbox.admin_ui.link_api import LinkUploadApi
from davbox.audit import AuditStore, AuditUnavailable
from davbox.codes import CodeRefused, OneTimeCodes
from davbox.dav.audit import CountedBody
from davbox.encryption import request_alarm
from davbox.events import (
    MAX_USER_AGENT,
    AccessRefused,
    LinkCodeSent,
    LinkDownloaded,
    LinkViewed,
    LoginRefused,
    LoginSucceeded,
)
from davbox.links import Link
from davbox.policies.base import AccessRequest, Decision, Operation
from davbox.policies.engine import PolicyEngine
from davbox.policies.limits import human
from davbox.policies.systemfiles import system_file_action
from davbox.providers.storage.sealed import ContentTampered
from davbox.sharing import LinkNotFound, LinkPasswordRequired, ShareService
from davbox.throttle import Throttled
from davbox.uploads import CHUNK_MAX, ResumableUploads

if TYPE_CHECKING:
    from davbox.admin_ui.web import Page, WebApp

_ANY = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
RULES = [
    Rule("/s/<token>", endpoint="link", methods=["GET", "HEAD", "POST"]),
    Rule("/s/<token>/files/<path:sub>", endpoint="link_files", methods=["GET", "HEAD"]),
    Rule("/s/<token>/download", endpoint="link_download", methods=["GET", "HEAD"]),
    Rule("/s/<token>/code", endpoint="link_code", methods=["GET", "POST"]),
    Rule("/s/<token>/zip", endpoint="link_zip", defaults={"sub": ""}, methods=["GET", "HEAD"]),
    Rule("/s/<token>/zip/<path:sub>", endpoint="link_zip", methods=["GET", "HEAD"]),
    Rule("/s/<token>/uploads", endpoint="link_upload_start", methods=["POST"]),
    Rule(
        "/s/<token>/uploads/<upload_id>",
        endpoint="link_upload",
        methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
    ),
    Rule("/s/<token>/<path:rest>", endpoint="link_other", methods=_ANY),
]
SCRIPT_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


ZIP_NAME = "files"  # a zip of a mailbox's top folder (whose name is not shown)


class IntegrityFailure(Exception):
    """A stored file failed its integrity check (recorded already): answer 500."""


class Gone(Exception):
    """Answer the one 404 page of share links."""


class Unavailable(Exception):
    """Answer 503: the download could not be recorded, so it is not sent."""


class CodeDue(Exception):
    """The link asks for a one-time code and this browser has not entered it."""


class PasswordDue(Exception):
    """The link has a password and this browser has not given it (or it was forgotten)."""

    def __init__(self, link: Link) -> None:
        super().__init__("the link's password is due")
        self.link = link


def _link_endpoint(method: Callable[..., Response]) -> Callable[..., Response]:
    """Answer ``Gone`` with the one 404 page and ``PasswordDue`` with the password prompt."""

    @functools.wraps(method)
    def wrapper(self: LinkPages, page: Page, **args: Any) -> Response:
        try:
            response = method(self, page, **args)
        except Gone:
            response = self.web.render(page, "link_gone.html", 404)
        except PasswordDue as due:
            response = self._prompt(page, args["token"], due.link)
        except CodeDue:
            response = redirect(f"/s/{args['token']}/code", 303)
        except IntegrityFailure:
            response = self.web.render(
                page,
                "message.html",
                500,
                title=page._("This file cannot be sent"),
                text=page._(
                    "The stored file failed its integrity check, so it is not sent."
                    " The administrators have been told."
                ),
            )
        except Unavailable:
            response = self.web.render(
                page,
                "message.html",
                503,
                title=page._("Not available right now"),
                text=page._("The download cannot be recorded at the moment. Try again later."),
            )
        response.headers.setdefault("X-Robots-Tag", "noindex, nofollow")
        return response

    return wrapper


class LinkPages:
    def __init__(
        self,
        shares: ShareService,
        uploads: ResumableUploads,
        gate: LinkGate,
        engine: PolicyEngine,
        codes: OneTimeCodes | None = None,
        audit: AuditStore | None = None,
    ) -> None:
        self.codes = codes
        self.audit = audit
        self.shares = shares
        self.uploads = uploads
        self.gate = gate
        self.engine = engine
        self.api = LinkUploadApi(uploads, gate, self)
        self._web: WebApp | None = None

    def attach(self, web: WebApp) -> None:
        self._web = web

    @property
    def web(self) -> WebApp:
        assert self._web is not None, "LinkPages.attach(web) first"
        return self._web

    # -- who is asking --------------------------------------------------------------

    def visit(self, page: Page, token: str, *, code: bool = True) -> Visit:
        """The link of ``token`` opened for this browser.

        Raises ``Gone`` for every token that does not lead to a usable link,
        ``PasswordDue`` while its password has not been given, then
        ``CodeDue`` while its one-time code has not been entered (unless
        ``code`` is False: the code page itself).
        """
        link = self.gate.find(token)
        if link is None:
            raise Gone()
        if link.has_password:
            name = self.gate.cookie_name(link)
            ok, refreshed = self.gate.remembered(link, page.request.cookies.get(name))
            if not ok:
                raise PasswordDue(link)
            if refreshed:
                page.cookies.append((name, refreshed))
        if code and link.needs_code:
            given = page.request.cookies.get(self.gate.code_cookie_name(link))
            if not self.gate.code_remembered(link, given):
                raise CodeDue()
        box = self.shares.mailboxes_for(link)[link.mailbox]
        context = _context(page, link)
        return Visit(token, link, self.shares.principal_for(link), box, context)

    def judge(self, visit: Visit, rel: str, op: Operation) -> Decision:
        """The policies' answer for ``op`` on ``rel``; a refusal is also an event."""
        principal, box = visit.principal, visit.box
        decision = self.engine.admit(principal, box.name, box.roles)
        if decision.allowed:
            decision = self.engine.check(
                AccessRequest(
                    principal,
                    box.name,
                    rel,
                    op,
                    box.roles,
                    usage=lambda: self.shares.storage.usage(box.storage_key),
                )
            )
        if not decision.allowed:
            self.shares.events.emit(
                AccessRefused(
                    **visit.context,
                    actor=principal.name,
                    mailbox=box.name,
                    path=rel,
                    operation=op.value,
                    status=decision.status,
                    rule=decision.rule,
                    reason=decision.reason,
                )
            )
        return decision

    def may(self, visit: Visit, rel: str, op: Operation) -> bool:
        """Ask without recording a refusal (what to offer on a page)."""
        box = visit.box
        return self.engine.check(
            AccessRequest(visit.principal, box.name, rel, op, box.roles)
        ).allowed

    def _refused(self, page: Page, decision: Decision) -> Response:
        return self.web.render(
            page,
            "message.html",
            decision.status,
            title=page._("This is not allowed"),
            text=decision.reason,
        )

    # -- pages ------------------------------------------------------------------------

    @_link_endpoint
    def on_link(self, page: Page, token: str) -> Response:
        if page.request.method == "POST":
            return self._password(page, token)
        visit = self.visit(page, token)
        item = self.gate.locate(visit.link, "")
        if item is None:
            raise Gone()
        if visit.link.permission == "drop":
            return self._drop_page(page, visit)
        if item.is_dir:
            return self._folder_page(page, visit, item)
        decision = self.judge(visit, item.rel, Operation.READ)
        if not decision.allowed:
            return self._refused(page, decision)
        self._viewed(visit, item, "file")
        return self._render(page, visit, "link_file.html", item=item)

    @_link_endpoint
    def on_link_files(self, page: Page, token: str, sub: str) -> Response:
        visit = self.visit(page, token)
        item = self._visible(visit, sub)
        if item.is_dir:
            return self._folder_page(page, visit, item)
        return self._send(page, visit, item)

    @_link_endpoint
    def on_link_download(self, page: Page, token: str) -> Response:
        """The file of a link to one file."""
        visit = self.visit(page, token)
        item = self._visible(visit, "")
        if item.is_dir:
            raise Gone()
        return self._send(page, visit, item)

    def _send(self, page: Page, visit: Visit, item: Item) -> Response:
        decision = self.judge(visit, item.rel, Operation.READ)
        if not decision.allowed:
            return self._refused(page, decision)
        self._writable()
        try:
            st = item.fs.stat()
        except FileNotFoundError:
            raise Gone() from None
        content = self._open(visit, item.fs, item.rel)
        size = self.gate.storage.content_size(st.st_size)
        response = file_response(content, size, st, item.name, page.request.environ)
        if page.request.method == "HEAD":
            return response
        # Counted against max_downloads by what is sent, not by what was asked:
        # a whole file, or a part from its first byte ("bytes=00-", "bytes=-N"
        # of a short file, a failed If-Range all send the start of the file).
        if _sends_the_start(response) and not links.count_download(self.shares.db, visit.link.id):
            response.close()
            raise Gone()
        self._record_when_sent(visit, item.rel, response)
        return response

    def _open(self, visit: Visit, fs: Path, rel: str) -> BinaryIO:
        """A file's content; one that fails its integrity check is recorded and refused."""
        context = {**visit.context, "actor": visit.principal.name}
        alarm = request_alarm(self.shares.events, context, visit.box.name, rel)
        try:
            return self.gate.storage.open_content(fs, alarm)
        except FileNotFoundError:
            raise Gone() from None
        except ContentTampered:
            raise IntegrityFailure() from None

    def _hidden(self, visit: Visit, rel: str) -> bool:
        """A system file (``._*``, ``.DS_Store``, ...) a ``system_files`` rule hides."""
        ruling = system_file_action(
            self.engine.policies, visit.principal, visit.box.name, rel, drop=False
        )
        return ruling is not None and ruling[0] == "hide"

    def _writable(self) -> None:
        """Refuse a download (503) that could not be recorded: the audit trail is unwritable."""
        if self.audit is not None:
            try:
                self.audit.check_writable()
            except AuditUnavailable as exc:
                raise Unavailable(str(exc)) from None

    def _record_when_sent(
        self, visit: Visit, rel: str, response: Response, *, archive: bool = False
    ) -> None:
        """Record a ``LinkDownloaded`` with the bytes sent when the answer ends (or breaks)."""
        status = response.status_code
        content_range = response.headers.get("Content-Range", "")

        def report(sent: int, complete: bool) -> None:
            self.shares.events.emit(
                LinkDownloaded(
                    **visit.context,
                    actor=visit.principal.name,
                    mailbox=visit.box.name,
                    path=rel,
                    status=status,
                    link_id=visit.link.id,
                    archive=archive,
                    size=sent if status in (200, 206) else 0,
                    range=content_range,
                    complete=complete,
                )
            )

        body = cast("Iterable[bytes]", response.response)  # files and zips: bytes
        response.response = CountedBody(body, report)

    @_link_endpoint
    def on_link_zip(self, page: Page, token: str, sub: str) -> Response:
        visit = self.visit(page, token)
        folder = self._visible(visit, sub)
        if not folder.is_dir:
            raise Gone()
        decision = self.judge(visit, folder.rel, Operation.LIST)
        if not decision.allowed:
            return self._refused(page, decision)
        files, empty = self._zip_contents(visit, folder)
        if page.request.method != "HEAD" and not links.count_download(
            self.shares.db, visit.link.id
        ):
            raise Gone()
        self._writable()
        response = zip_response(files, empty, f"{folder.name or ZIP_NAME}.zip")
        if page.request.method != "HEAD":
            self._record_when_sent(visit, folder.rel, response, archive=True)
        return response

    @_link_endpoint
    def on_link_other(self, page: Page, token: str, rest: str) -> Response:
        raise Gone()

    # -- the upload API (JSON; see link_api) ---------------------------------------------

    @_link_endpoint
    def on_link_upload_start(self, page: Page, token: str) -> Response:
        return self.api.start(page, self._api_visit(page, token))

    @_link_endpoint
    def on_link_upload(self, page: Page, token: str, upload_id: str) -> Response:
        return self.api.step(page, self._api_visit(page, token), upload_id)

    def _api_visit(self, page: Page, token: str) -> Visit | None:
        """The visit, or None while the password or code is due (the API answers 401)."""
        try:
            return self.visit(page, token)
        except (PasswordDue, CodeDue):
            return None

    # -- helpers ------------------------------------------------------------------------

    def _visible(self, visit: Visit, sub: str) -> Item:
        """A file or folder below the link that its permission may see (else ``Gone``)."""
        if not self.may(visit, visit.link.path, Operation.LIST):
            raise Gone()  # a drop link sees no names, not even its own folder's
        item = self.gate.locate(visit.link, sub)
        if item is None:
            raise Gone()
        return item

    def _zip_contents(self, visit: Visit, folder: Item) -> tuple[list[ZipFile], list[str]]:
        """Files the link may read below ``folder`` and folders left empty, by name in the zip."""
        files: list[ZipFile] = []
        empty: list[str] = []
        top = folder.name or ZIP_NAME
        for here, dirs, names in os.walk(folder.fs):
            sub = os.path.relpath(here, folder.fs)
            arc = top if sub == "." else f"{top}/{sub}"
            rel = folder.rel.rstrip("/") + ("" if sub == "." else "/" + sub)
            if sub != "." and not self.may(visit, rel, Operation.LIST):
                dirs[:] = []
                continue
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(here, d)))
            added = 0
            for name in sorted(names):
                path = os.path.join(here, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                if self.may(visit, f"{rel}/{name}", Operation.READ) and not self._hidden(
                    visit, f"{rel}/{name}"
                ):
                    fs, item_rel = Path(path), f"{rel}/{name}"
                    size = self.gate.storage.content_size(os.stat(path).st_size)
                    files.append((partial(self._open, visit, fs, item_rel), size, f"{arc}/{name}"))
                    added += 1
            if not added and not dirs:
                empty.append(arc)
        return files, empty

    def _folder_page(self, page: Page, visit: Visit, folder: Item) -> Response:
        decision = self.judge(visit, folder.rel, Operation.LIST)
        if not decision.allowed:
            return self._refused(page, decision)
        self._viewed(visit, folder, "folder")
        base = visit.base
        top = self.gate.locate(visit.link, "")
        crumbs = [(visit.link.label or (top.name if top else "") or page._("Shared files"), base)]
        parts = [p for p in folder.sub.split("/") if p]
        for index, part in enumerate(parts):
            crumbs.append((part, f"{base}/files/{_quote(parts[: index + 1])}/"))
        children = [c for c in self.gate.children(folder) if not self._hidden(visit, c.rel)]
        uploads = visit.link.permission == "write"
        return self._render(
            page,
            visit,
            "link_folder.html",
            scripts=uploads,
            folder=folder,
            crumbs=crumbs,
            items=[
                (item, f"{base}/files/{_quote(item.sub.split('/'))}{'/' if item.is_dir else ''}")
                for item in children
            ],
            zip_url=f"{base}/zip/{_quote(parts)}" if parts else f"{base}/zip",
            uploads=uploads,
            upload_folder=folder.sub,
        )

    def _drop_page(self, page: Page, visit: Visit) -> Response:
        self._viewed(visit, None, "drop")
        return self._render(page, visit, "link_drop.html", scripts=True, uploads=True)

    def _render(
        self, page: Page, visit: Visit, template: str, *, scripts: bool = False, **values: Any
    ) -> Response:
        link = visit.link
        response = self.web.render(
            page,
            template,
            link=link,
            base=visit.base,
            accepts=link.accepts_uploads(),
            downloads_left=(
                None if link.max_downloads is None else link.max_downloads - link.downloads
            ),
            chunk=CHUNK_MAX,
            size=_size,
            **values,
        )
        if scripts:
            response.headers["Content-Security-Policy"] = SCRIPT_CSP
        return response

    def _viewed(self, visit: Visit, item: Item | None, kind: str) -> None:
        self.shares.events.emit(
            LinkViewed(
                **visit.context,
                actor=visit.principal.name,
                mailbox=visit.box.name,
                path=item.rel if item else visit.link.path,
                link_id=visit.link.id,
                page=kind,
            )
        )

    def _prompt(
        self, page: Page, token: str, link: Link, status: int = 200, **values: Any
    ) -> Response:
        self.shares.events.emit(
            LinkViewed(
                **_context(page, link),
                actor=f"link-{link.id}",
                mailbox=link.mailbox,
                path=link.path,
                link_id=link.id,
                page="password",
            )
        )
        return self.web.render(page, "link_password.html", status, base=f"/s/{token}", **values)

    def _password(self, page: Page, token: str) -> Response:
        link = self.gate.find(token)
        if link is None:
            raise Gone()
        if not link.has_password:
            return redirect(f"/s/{token}", 303)
        if not self.web._csrf_ok(page):
            return self.web._bad_form(page)
        context = _context(page, link)
        refused = {**context, "actor": f"link-{link.id}", "mailbox": link.mailbox, "via": "link"}
        try:
            opened = self.shares.open(
                token, page.request.form.get("password", ""), page.request.remote_addr or ""
            )
        except LinkNotFound:
            raise Gone() from None
        except Throttled as exc:
            self.shares.events.emit(LoginRefused(**refused, outcome="throttled", status=429))
            response = self.web._throttled(page, "link_password.html", exc, base=f"/s/{token}")
            return response
        except LinkPasswordRequired as exc:
            self.shares.events.emit(LoginRefused(**refused, outcome="wrong", status=401))
            error = page._("Wrong password.") if exc.wrong else page._("Enter the password.")
            return self._prompt(page, token, link, 401, error=error)
        page.cookies.append((self.gate.cookie_name(opened.link), self.gate.remember(opened.link)))
        return redirect(f"/s/{token}", 303)

    # -- the one-time code (SecureTransfer) ---------------------------------------------

    @_link_endpoint
    def on_link_code(self, page: Page, token: str) -> Response:
        """Ask for the link's one-time code: send one if none is pending, check what is entered."""
        visit = self.visit(page, token, code=False)
        link = visit.link
        if not link.needs_code or self.codes is None:
            return redirect(f"/s/{token}", 303)
        if page.request.method == "POST":
            if not self.web._csrf_ok(page):
                return self.web._bad_form(page)
            if "resend" in page.request.form:
                return self._send_code(page, visit, again=True)
            return self._check_code(page, visit)
        if not self.codes.pending(link):
            return self._send_code(page, visit, again=False)
        return self._code_form(page, visit)

    def _send_code(self, page: Page, visit: Visit, *, again: bool) -> Response:
        assert self.codes is not None
        link = visit.link
        fields = {**visit.context, "actor": visit.principal.name, "mailbox": link.mailbox}
        try:
            self.codes.issue(link, page.lang)
        except CodeRefused as refused:
            if refused.reason == "too-soon":
                note = page._("A code was sent a moment ago. Wait a minute before asking again.")
                return self._code_form(page, visit, 429 if again else 200, error=note)
            self.shares.events.emit(
                LinkCodeSent(
                    **fields, path=link.path, status=503, link_id=link.id, channel=link.code_channel
                )
            )
            note = page._("The code could not be sent. Try again in a few minutes.")
            return self._code_form(page, visit, 503, error=note)
        self.shares.events.emit(
            LinkCodeSent(
                **fields, path=link.path, status=200, link_id=link.id, channel=link.code_channel
            )
        )
        return self._code_form(page, visit, sent=True)

    def _check_code(self, page: Page, visit: Visit) -> Response:
        assert self.codes is not None
        link = visit.link
        fields = {**visit.context, "actor": visit.principal.name, "mailbox": link.mailbox}
        result = self.codes.check(link, page.request.form.get("code", ""))
        if result.ok:
            self.shares.events.emit(LoginSucceeded(**fields, method="code", via="link"))
            page.cookies.append((self.gate.code_cookie_name(link), self.gate.code_given(link)))
            return redirect(f"/s/{visit.token}", 303)
        outcome = "wrong-code" if result.outcome == "wrong" else f"code-{result.outcome}"
        self.shares.events.emit(LoginRefused(**fields, outcome=outcome, status=401, via="link"))
        if result.outcome == "wrong":
            error = page._("That code is not right.")
        else:
            error = page._("That code can no longer be used. Ask for a new code.")
        return self._code_form(page, visit, 401, error=error)

    def _code_form(self, page: Page, visit: Visit, status: int = 200, **values: Any) -> Response:
        link = visit.link
        where = link.code_to if link.code_channel == "webhook" else link.recipient
        return self.web.render(
            page,
            "link_code.html",
            status,
            base=f"/s/{visit.token}",
            destination=mask(where or ""),
            by_phone=link.code_channel == "webhook",
            **values,
        )


def mask(where: str) -> str:
    """Enough of an address or number to recognise it, not to learn it: j***@example.org."""
    if "@" in where:
        local, _, domain = where.rpartition("@")
        return f"{local[:1]}***@{domain}"
    digits = where.strip()
    return "*" * max(len(digits) - 2, 0) + digits[-2:]


def _context(page: Page, link: Link) -> dict[str, Any]:
    """Event fields of a request through ``link`` (its actor name is added by the caller)."""
    environ = page.request.environ
    return {
        "request_id": environ.get("davbox.request_id", ""),
        "actor_kind": "link",
        "credential_id": link.id,
        "email": link.recipient or "",
        "client": environ.get("REMOTE_ADDR", ""),
        "user_agent": environ.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT],
    }


def _quote(parts: list[str]) -> str:
    return "/".join(quote(p, safe="") for p in parts if p)


def _size(size: int) -> str:
    return human(size) if size >= 1000 else f"{size} B"


def _sends_the_start(response: Response) -> bool:
    """Whether an answer carries the file's first byte: 200, or a 206 from byte 0."""
    if response.status_code == 200:
        return True
    if response.status_code != 206:
        return False
    content_range = response.headers.get("Content-Range")
    return content_range is None or content_range.startswith("bytes 0-")
