"""The web pages: start page, login (password, then code), account, 2FA and app passwords.

Contract:
- Every path outside ``/dav/`` comes here (the dispatcher routes it);
  unknown paths get a 404 page.
- Login is two steps: ``/login`` checks the password (throttled like every
  login) and starts a server-side session at stage "password" (code due),
  "enroll" (two-factor login must be set up first: ``/login/setup``) or
  "full" (accounts outside ``auth.two_factor_for`` without TOTP). ``/login/code``
  takes a TOTP or recovery code. Each step issues a **new session token**.
  Only "full" sessions open ``/account`` pages; nothing here opens WebDAV,
  which takes only Basic credentials (app passwords for 2FA accounts).
- The session cookie is ``__Host-davbox``: Secure, HttpOnly, SameSite=Strict,
  Path=/. Browsers keep Secure cookies only over HTTPS or on loopback, so the
  login form refuses (with an explanation) on plain HTTP from elsewhere.
- Every POST carries a CSRF token: a session's own token, or before login an
  HMAC of a random pre-login cookie; a mismatch is 400 and changes nothing.
- Secrets shown once (recovery codes, new app passwords) are rendered only in
  the response to the POST that made them, with ``Cache-Control: no-store``.
- Headers on every page: a strict Content-Security-Policy (no scripts),
  ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, ``nosniff``.
- Pages speak English or Dutch (``davbox.admin_ui.i18n``).
- ``/register`` and ``/register/verify/<token>`` are self-registration
  (``davbox.admin_ui.register_pages``), answered by the ``RegisterPages``
  given to the app (404 without one: ``web.registration`` is off).
- ``/s/<token>...`` are the share link pages (``davbox.admin_ui.link_pages``),
  answered by the ``LinkPages`` given to the app (404 without one).
- ``/account/links`` and ``/account/files/...`` are the delivery reports
  (``davbox.admin_ui.report_pages``), answered by the ``ReportPages`` given
  to the app (404 without one).
- ``/account/notifications`` is the account's notification settings
  (``davbox.admin_ui.notify_pages``), answered by the ``NotifyPages`` given
  to the app (404 without one).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import segno
from markupsafe import Markup
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

import davbox
from davbox import accounts, app_passwords, twofactor
from davbox.access import AccessService
from davbox.accounts import AdminError
from davbox.admin_ui.i18n import environment, gettext, negotiate
from davbox.admin_ui.link_pages import RULES as LINK_RULES
from davbox.admin_ui.link_pages import LinkPages
from davbox.admin_ui.loginflow_pages import NEXT_COOKIE, LoginFlowPages
from davbox.admin_ui.loginflow_pages import RULES as LOGINFLOW_RULES
from davbox.admin_ui.notify_pages import RULES as NOTIFY_RULES
from davbox.admin_ui.notify_pages import NotifyPages
from davbox.admin_ui.register_pages import RULES as REGISTER_RULES
from davbox.admin_ui.register_pages import RegisterPages
from davbox.admin_ui.report_pages import RULES as REPORT_RULES
from davbox.admin_ui.report_pages import ReportPages
from davbox.db import Database
from davbox.events import EventBus, LoginRefused, LoginSucceeded, request_context
from davbox.passwords import validate_new_password
from davbox.providers.identity import ProviderUnavailable
from davbox.sessions import SessionInfo, SessionStore
from davbox.throttle import Throttled

COOKIE = "__Host-davbox"
PRE_COOKIE = "__Host-davbox-pre"
LANG_COOKIE = "davbox-lang"
STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"davbox.css": "text/css", "drop.js": "text/javascript"}
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)

_ROUTES = Map(
    [
        Rule("/", endpoint="start", methods=["GET", "HEAD"]),
        Rule("/static/<name>", endpoint="static", methods=["GET", "HEAD"]),
        Rule("/login", endpoint="login", methods=["GET", "HEAD", "POST"]),
        Rule("/login/code", endpoint="login_code", methods=["GET", "HEAD", "POST"]),
        Rule("/login/setup", endpoint="login_setup", methods=["GET", "HEAD", "POST"]),
        Rule("/logout", endpoint="logout", methods=["POST"]),
        Rule("/account", endpoint="account", methods=["GET", "HEAD"]),
        Rule("/account/2fa", endpoint="twofactor", methods=["GET", "HEAD", "POST"]),
        Rule("/account/app-passwords", endpoint="app_passwords", methods=["GET", "HEAD", "POST"]),
        Rule("/account/password", endpoint="password", methods=["GET", "HEAD", "POST"]),
        *REGISTER_RULES,
        *LINK_RULES,
        *REPORT_RULES,
        *NOTIFY_RULES,
        *LOGINFLOW_RULES,
    ],
    strict_slashes=False,
)


@dataclass
class Page:
    """One request as the handlers see it: the request, its language and session."""

    request: Request
    lang: str
    session: SessionInfo | None
    token: str | None
    csrf: str
    cookies: list[tuple[str, str | None]] = field(default_factory=list)

    def _(self, message: str) -> str:
        return gettext(self.lang, message)


class WebApp:
    def __init__(
        self,
        db: Database,
        access: AccessService,
        sessions: SessionStore,
        events: EventBus,
        *,
        max_age: int,
        links: LinkPages | None = None,
        registration: RegisterPages | None = None,
        reports: ReportPages | None = None,
        notifications: NotifyPages | None = None,
        loginflow: LoginFlowPages | None = None,
    ) -> None:
        self.db = db
        self.access = access
        self.sessions = sessions
        self.events = events
        self.max_age = max_age
        self._secret = db.server_secret()
        self.links = links
        if links is not None:
            links.attach(self)
        self.registration = registration
        if registration is not None:
            registration.attach(self)
        self.reports = reports
        if reports is not None:
            reports.attach(self)
        self.notifications = notifications
        if notifications is not None:
            notifications.attach(self)
        self.loginflow = loginflow
        if loginflow is not None:
            loginflow.attach(self)

    # -- plumbing ---------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = 64 * 1024
        request.max_form_memory_size = 64 * 1024
        token = request.cookies.get(COOKIE)
        session = self.sessions.get(token)
        lang = negotiate(
            request.args.get("lang"), request.cookies.get(LANG_COOKIE), request.accept_languages
        )
        page = Page(request, lang, session, token if session else None, "")
        page.csrf = session.csrf if session else self._pre_csrf(page)
        try:
            endpoint, args = _ROUTES.bind_to_environ(environ).match()
            owner: Any = self
            if endpoint.startswith("link"):
                owner = self.links
            elif endpoint.startswith("register"):
                owner = self.registration
            elif endpoint.startswith("report"):
                owner = self.reports
            elif endpoint.startswith("notify"):
                owner = self.notifications
            elif endpoint.startswith("loginflow"):
                owner = self.loginflow
            if owner is None:
                raise NotFound()
            response = getattr(owner, "on_" + endpoint)(page, **args)
        except NotFound:
            response = self.render(page, "message.html", 404, title=page._("Page not found"))
        except MethodNotAllowed as exc:
            response = exc.get_response(environ)
        except HTTPException as exc:  # e.g. 413 for an oversized form
            response = exc.get_response(environ)
        self._finish(page, response)
        return response(environ, start_response)

    def _finish(self, page: Page, response: Response) -> None:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "no-referrer")
        if response.mimetype == "text/html":
            headers.setdefault("Cache-Control", "no-store")
        if page.request.args.get("lang") == page.lang:
            response.set_cookie(
                LANG_COOKIE, page.lang, max_age=365 * 86400, samesite="Lax", httponly=True
            )
        for name, value in page.cookies:
            if value is None:
                response.delete_cookie(
                    name, path="/", secure=True, httponly=True, samesite="Strict"
                )
            else:
                response.set_cookie(
                    name,
                    value,
                    max_age=self.max_age,
                    path="/",
                    secure=True,
                    httponly=True,
                    samesite="Strict",
                )

    def render(self, page: Page, template: str, status: int = 200, **values: Any) -> Response:
        body = (
            environment(page.lang)
            .get_template(template)
            .render(
                session=page.session,
                csrf=page.csrf,
                path=page.request.path,
                version=davbox.__version__,
                register_open=self.registration is not None,
                **values,
            )
        )
        return Response(body, status=status, mimetype="text/html")

    def _pre_csrf(self, page: Page) -> str:
        """Before login: a CSRF token bound to a random cookie (set if missing)."""
        seed = page.request.cookies.get(PRE_COOKIE, "")
        if not 20 <= len(seed) <= 64:
            seed = secrets.token_urlsafe(24)
            page.cookies.append((PRE_COOKIE, seed))
        return hmac.new(self._secret, b"pre-login\0" + seed.encode(), hashlib.sha256).hexdigest()

    def _csrf_ok(self, page: Page) -> bool:
        sent = page.request.form.get("csrf", "")
        return bool(page.csrf) and hmac.compare_digest(sent.encode(), page.csrf.encode())

    def _bad_form(self, page: Page) -> Response:
        return self.render(
            page,
            "message.html",
            400,
            title=page._("This form has expired"),
            text=page._("Reload the page and try again."),
        )

    def _secure_transport(self, request: Request) -> bool:
        if request.scheme == "https":
            return True
        try:
            client = ipaddress.ip_address(request.remote_addr or "")
            # urlsplit knows "[::1]" (no port) from "127.0.0.1:8080" and "[::1]:8080".
            host = ipaddress.ip_address(urlsplit("//" + (request.host or "")).hostname or "")
        except ValueError:
            return False
        return client.is_loopback and host.is_loopback

    def _login_as(self, page: Page, user_id: int, stage: str) -> None:
        request = page.request
        if page.token:
            self.sessions.end(page.token)
        token = self.sessions.start(
            user_id,
            stage,
            request.remote_addr or "",
            request.headers.get("User-Agent", ""),
        )
        page.cookies.append((COOKIE, token))
        page.token = token

    def _advance(self, page: Page, stage: str) -> None:
        assert page.token is not None
        page.token = self.sessions.advance(page.token, stage)
        page.cookies.append((COOKIE, page.token))
        page.session = self.sessions.get(page.token)
        page.csrf = page.session.csrf if page.session else ""

    def _emit_refused(self, page: Page, username: str, outcome: str, status: int) -> None:
        context = request_context(page.request.environ)
        context["actor"] = username
        self.events.emit(LoginRefused(**context, outcome=outcome, status=status, via="web"))

    def _emit_success(self, page: Page, username: str, method: str) -> None:
        context = request_context(page.request.environ)
        context["actor"] = username
        self.events.emit(LoginSucceeded(**context, method=method, via="web"))

    def _full(self, page: Page) -> Response | None:
        """None if the page may be shown; else where to go (a redirect to the next step)."""
        if page.session is None:
            return redirect("/login", 303)
        if page.session.stage == "password":
            return redirect("/login/code", 303)
        if page.session.stage == "enroll":
            return redirect("/login/setup", 303)
        return None

    # -- pages ------------------------------------------------------------

    def on_start(self, page: Page) -> Response:
        request = page.request
        dav_url = f"{request.host_url}dav/"
        return self.render(page, "start.html", dav_url=dav_url)

    def on_static(self, page: Page, name: str) -> Response:
        mimetype = STATIC_FILES.get(name)
        if mimetype is None:
            raise NotFound()
        response = Response((STATIC / name).read_bytes(), mimetype=mimetype)
        response.headers["Cache-Control"] = "max-age=3600"
        return response

    def on_login(self, page: Page) -> Response:
        request = page.request
        if page.session is not None and page.session.stage == "full":
            return redirect("/account", 303)
        secure = self._secure_transport(request)
        if request.method != "POST":
            return self.render(page, "login.html", secure=secure)
        if not self._csrf_ok(page):
            return self._bad_form(page)
        if not secure:
            return self.render(page, "login.html", 400, secure=False)
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if not username or not password:
            return self.render(
                page,
                "login.html",
                400,
                secure=True,
                username=username,
                error=page._("Enter your user name and password."),
            )
        try:
            identity = self.access.check_password(username, password, request.remote_addr or "")
        except Throttled as exc:
            self._emit_refused(page, username, "throttled", 429)
            return self._throttled(page, "login.html", exc, username=username, secure=True)
        except ProviderUnavailable:
            return self.render(
                page,
                "login.html",
                503,
                secure=True,
                username=username,
                error=page._("Logging in is not possible right now. Try again later."),
            )
        if identity is None:
            self._emit_refused(page, username, "wrong", 401)
            return self.render(
                page,
                "login.html",
                401,
                secure=True,
                username=username,
                error=page._("Wrong user name or password."),
            )
        if twofactor.is_enrolled(self.db, identity.name):
            stage = "password"
        elif self.access.requires_two_factor(identity):
            stage = "enroll"
        else:
            stage = "full"
            self._emit_success(page, identity.name, "password")
        self._login_as(page, identity.user_id, stage)
        if stage == "full":
            return self._after_login(page)
        return redirect({"password": "/login/code", "enroll": "/login/setup"}[stage], 303)

    def _after_login(self, page: Page) -> Response:
        """To the account page, or back to the page that sent the browser to log in
        (an app's login link: Login Flow v2)."""
        target = page.request.cookies.get(NEXT_COOKIE, "")
        if target:
            page.cookies.append((NEXT_COOKIE, None))
        if re.fullmatch(r"/index\.php/login/v2/flow/[A-Za-z0-9_-]{20,100}", target):
            return redirect(target, 303)
        return redirect("/account", 303)

    def on_login_code(self, page: Page) -> Response:
        session = page.session
        if session is None or session.stage != "password":
            return redirect("/login" if session is None else "/account", 303)
        request = page.request
        if request.method != "POST":
            return self.render(page, "login_code.html")
        if not self._csrf_ok(page):
            return self._bad_form(page)
        code = request.form.get("code", "").strip()
        try:
            ok = bool(code) and self.access.check_second_factor(
                session.username, code, request.remote_addr or ""
            )
        except Throttled as exc:
            self._emit_refused(page, session.username, "throttled", 429)
            return self._throttled(page, "login_code.html", exc)
        if not ok:
            self._emit_refused(page, session.username, "wrong-code", 401)
            return self.render(
                page,
                "login_code.html",
                401,
                error=page._("That code is not right, or was used already. Wait for a new code."),
            )
        self._advance(page, "full")
        self._emit_success(page, session.username, "password+code")
        return self._after_login(page)

    def on_login_setup(self, page: Page) -> Response:
        """Two-factor login set up during the first login (the account requires it)."""
        session = page.session
        if session is None or session.stage != "enroll":
            return redirect("/login" if session is None else "/account", 303)
        return self._enroll(page, session, during_login=True)

    def _enroll(self, page: Page, session: SessionInfo, *, during_login: bool) -> Response:
        request = page.request
        template = "login_setup.html" if during_login else "twofactor.html"
        secret = twofactor.unseal(self.db, session.pending_totp) if session.pending_totp else None
        if request.method == "POST":
            if not self._csrf_ok(page):
                return self._bad_form(page)
            action = request.form.get("action", "confirm")
            if action == "confirm" and secret is not None:
                try:
                    codes = self.access.confirm_two_factor(
                        session.username,
                        secret,
                        request.form.get("code", ""),
                        request.remote_addr or "",
                        keep_session=session.id,
                    )
                except Throttled as exc:
                    return self._throttled(page, template, exc, **self._qr(secret, session))
                if codes is None:
                    return self.render(
                        page,
                        template,
                        400,
                        error=page._("That code is not right. Check the clock of your phone."),
                        **self._qr(secret, session),
                    )
                self._advance(page, "full")
                self._emit_success(page, session.username, "password+code")
                return self.render(page, "recovery_codes.html", codes=codes)
            if action == "start" or secret is None:
                secret = twofactor.new_secret()
                self.sessions.set_pending_totp(session.id, twofactor.seal(self.db, secret))
        elif secret is None and (during_login or request.args.get("new")):
            secret = twofactor.new_secret()
            self.sessions.set_pending_totp(session.id, twofactor.seal(self.db, secret))
        values = self._qr(secret, session) if secret else {}
        return self.render(
            page,
            template,
            enrolled=twofactor.is_enrolled(self.db, session.username),
            remaining=twofactor.remaining_recovery_codes(self.db, session.username),
            **values,
        )

    def _qr(self, secret: str, session: SessionInfo) -> dict[str, Any]:
        uri = twofactor.provisioning_uri(secret, session.username)
        svg = segno.make(uri, error="m").svg_inline(scale=5, title="QR code", dark="#111")
        # segno writes the SVG itself and escapes the URI it embeds.
        return {"qr_svg": Markup(svg), "secret": secret, "uri": uri}  # noqa: S704

    def _throttled(self, page: Page, template: str, exc: Throttled, **values: Any) -> Response:
        response = self.render(
            page,
            template,
            429,
            error=page._("Too many failed attempts. Wait {seconds} seconds and try again.").format(
                seconds=exc.retry_after
            ),
            **values,
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    def on_logout(self, page: Page) -> Response:
        if page.session is not None and not self._csrf_ok(page):
            return self._bad_form(page)
        self.sessions.end(page.token)
        page.cookies.append((COOKIE, None))
        page.session = None
        page.csrf = self._pre_csrf(page)
        return self.render(page, "message.html", title=page._("You are logged out."), login=True)

    def on_account(self, page: Page) -> Response:
        if (other := self._full(page)) is not None:
            return other
        assert page.session is not None
        name = page.session.username
        return self.render(
            page,
            "account.html",
            enrolled=twofactor.is_enrolled(self.db, name),
            remaining=twofactor.remaining_recovery_codes(self.db, name),
            app_password_count=len(app_passwords.list_for(self.db, name)),
            mailboxes=sorted(self._mailboxes(page)),
        )

    def on_twofactor(self, page: Page) -> Response:
        if (other := self._full(page)) is not None:
            return other
        assert page.session is not None
        return self._enroll(page, page.session, during_login=False)

    def _mailboxes(self, page: Page) -> dict[str, Any]:
        assert page.session is not None
        principal = self.access.principal_for(page.session.username)
        return self.access.mailboxes_for(principal) if principal else {}

    def on_app_passwords(self, page: Page) -> Response:
        if (other := self._full(page)) is not None:
            return other
        assert page.session is not None
        request = page.request
        name = page.session.username
        mailboxes = sorted(self._mailboxes(page))
        status, created, error, label = 200, None, None, ""
        if request.method == "POST":
            if not self._csrf_ok(page):
                return self._bad_form(page)
            if request.form.get("action") == "revoke":
                try:
                    app_passwords.revoke(self.db, name, request.form.get("label", ""))
                    self.access.refresh(force=True)  # in this process: at once
                except AdminError:
                    status, error = 404, page._("That app password does not exist (any more).")
            else:
                label = request.form.get("label", "").strip()
                chosen = tuple(m for m in request.form.getlist("mailbox") if m in mailboxes)
                try:
                    created = app_passwords.create(
                        self.db,
                        name,
                        label,
                        mailboxes=chosen,
                        read_only=request.form.get("read_only") == "1",
                    )
                except AdminError as exc:
                    status, error = 400, _admin_error(page, exc)
        return self.render(
            page,
            "app_passwords.html",
            status,
            items=app_passwords.list_for(self.db, name),
            mailboxes=mailboxes,
            created=created,
            created_label=label if created else "",
            error=error,
            label=label if not created else "",
        )

    def on_password(self, page: Page) -> Response:
        if (other := self._full(page)) is not None:
            return other
        assert page.session is not None
        request = page.request
        name = page.session.username
        if accounts.source_of(self.db, name) != "local":
            return self.render(
                page,
                "message.html",
                409 if request.method == "POST" else 200,
                title=page._("Change password"),
                text=page._(
                    "Your password is managed by your organisation's directory: change it there."
                ),
                back=True,
            )
        if request.method != "POST":
            return self.render(page, "password.html")
        if not self._csrf_ok(page):
            return self._bad_form(page)
        try:
            current = self.access.check_password(
                name, request.form.get("current", ""), request.remote_addr or ""
            )
        except Throttled as exc:
            return self._throttled(page, "password.html", exc)
        new, repeat = request.form.get("new", ""), request.form.get("repeat", "")
        error = None
        if current is None:
            error = page._("Your current password is not right.")
        elif new != repeat:
            error = page._("The new passwords differ.")
        else:
            try:
                validate_new_password(new)
                accounts.set_password(self.db, name, new, keep_session=page.session.id)
                self.access.refresh(force=True)  # the old password stops at once here
            except (ValueError, AdminError):
                error = page._("Choose a longer password: at least 10 characters.")
        if error:
            return self.render(page, "password.html", 400, error=error)
        self._advance(page, "full")
        return self.render(
            page,
            "message.html",
            title=page._("Your password was changed."),
            text=page._("Your other browser sessions have ended."),
            back=True,
        )


def _admin_error(page: Page, exc: AdminError) -> str:
    text = str(exc)
    if "already has an app password" in text:
        return page._("You already have an app password with that name.")
    return page._("Give the app password a name of letters, digits, dots, dashes or spaces.")
