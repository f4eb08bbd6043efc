"""Self-registration pages: ask for an account, then confirm it from the mailed link.

Routes (``RULES``, served by ``WebApp`` when ``web.registration.enabled``;
404 otherwise):

- ``/register``: GET a form (mail address, name, password twice); POST (with
  the pre-login CSRF token, over a secure connection like ``/login``) hands
  it to ``davbox.registration``. Every address in an allowed domain gets the
  same "check your mail" page, whether it has an account or not.
- ``/register/verify/<token>``: GET shows a button and changes nothing (mail
  scanners that open links do not make accounts); POST (CSRF) makes the
  account and points to ``/login``. Unknown, used, replaced and expired links
  get one page (404), on GET and POST alike.

Guarantees:
- Events: ``RegistrationRequested`` (outcome "link" or "notice"),
  ``RegistrationRefused`` (domain, address, name, throttled, link) and
  ``AccountRegistered``, each in the audit trail. Passwords are in no event,
  page or log line; the access log shows ``/register/verify/-``.
- Form mistakes (empty fields, different passwords, a short password) are
  answered 400 on the form, with what was typed but the passwords.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from davbox.events import (
    AccountRegistered,
    EventBus,
    RegistrationRefused,
    RegistrationRequested,
    request_context,
)
from davbox.passwords import validate_new_password
from davbox.registration import RegistrationError, Registrations
from davbox.throttle import Throttled

if TYPE_CHECKING:
    from davbox.admin_ui.web import Page, WebApp

RULES = [
    Rule("/register", endpoint="register", methods=["GET", "HEAD", "POST"]),
    Rule("/register/verify/<token>", endpoint="register_verify", methods=["GET", "HEAD", "POST"]),
]


class RegisterPages:
    def __init__(self, registrations: Registrations, events: EventBus) -> None:
        self.registrations = registrations
        self.events = events
        self._web: WebApp | None = None

    def attach(self, web: WebApp) -> None:
        self._web = web

    @property
    def web(self) -> WebApp:
        assert self._web is not None, "RegisterPages.attach(web) first"
        return self._web

    # -- pages ------------------------------------------------------------------------

    def on_register(self, page: Page) -> Response:
        request = page.request
        secure = self.web._secure_transport(request)
        hours = max(1, round(self.registrations.settings.link_lifetime / 3600))
        if request.method != "POST":
            return self.web.render(page, "register.html", secure=secure, hours=hours)
        if not self.web._csrf_ok(page):
            return self.web._bad_form(page)
        if not secure:
            return self.web.render(page, "register.html", 400, secure=False, hours=hours)
        address = request.form.get("email", "").strip()
        name = request.form.get("display_name", "").strip()
        password, repeat = request.form.get("password", ""), request.form.get("repeat", "")

        def form(status: int, error: str) -> Response:
            return self.web.render(
                page,
                "register.html",
                status,
                secure=True,
                hours=hours,
                email=address,
                display_name=name,
                error=error,
            )

        if not address or not name or not password:
            return form(400, page._("Fill in your mail address, your name and a password."))
        if password != repeat:
            return form(400, page._("The passwords differ."))
        try:
            validate_new_password(password)
        except ValueError:
            return form(400, page._("Choose a longer password: at least 10 characters."))
        try:
            outcome = self.registrations.request(
                address=address,
                display_name=name,
                password=password,
                client=request.remote_addr or "",
                language=page.lang,
            )
        except RegistrationError as exc:
            self._refused(page, address, exc.reason, 403 if exc.reason == "domain" else 400)
            if exc.reason == "domain":
                return form(
                    403,
                    page._(
                        "Accounts can only be made with a mail address of a connected"
                        " organisation, and {domain} is not one of them."
                    ).format(domain=address.rpartition("@")[2]),
                )
            if exc.reason == "name":
                return form(
                    400,
                    page._(
                        "This mail address cannot be used for an account here."
                        " Ask your administrator."
                    ),
                )
            return form(400, page._("Enter one mail address, like name@example.org."))
        except Throttled as exc:
            self._refused(page, address, "throttled", 429)
            response = form(
                429,
                page._("Too many requests for an account. Try again in {minutes} minutes.").format(
                    minutes=max(1, round(exc.retry_after / 60))
                ),
            )
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        context = request_context(request.environ)
        self.events.emit(
            RegistrationRequested(
                **context, email=address.lower(), outcome=outcome, status=200, path="/register"
            )
        )
        return self.web.render(
            page,
            "message.html",
            title=page._("Check your mail"),
            text=page._(
                "If {address} can have an account, a mail is on its way to it. Open the link"
                " in it within {hours} hours to make your account."
            ).format(address=address, hours=hours),
        )

    def on_register_verify(self, page: Page, token: str) -> Response:
        request = page.request
        if request.method == "POST":
            if not self.web._csrf_ok(page):
                return self.web._bad_form(page)
            made = self.registrations.confirm(token)
            if made is None:
                return self._gone(page)
            context = request_context(request.environ)
            context["actor"], context["actor_kind"] = made.name, "user"
            self.events.emit(
                AccountRegistered(
                    **context,
                    email=made.email,
                    grants=made.grants,
                    status=200,
                    path="/register/verify/-",
                )
            )
            return self.web.render(
                page,
                "register_done.html",
                username=made.name,
            )
        if not self.registrations.check(token):
            return self._gone(page)
        return self.web.render(page, "register_verify.html", token=token)

    # -- helpers ----------------------------------------------------------------------

    def _gone(self, page: Page) -> Response:
        self._refused(page, "", "link", 404)
        return self.web.render(page, "register_gone.html", 404)

    def _refused(self, page: Page, address: str, reason: str, status: int) -> None:
        context = request_context(page.request.environ)
        path = "/register" if reason != "link" else "/register/verify/-"
        self.events.emit(
            RegistrationRefused(
                **context, email=address.lower()[:320], reason=reason, status=status, path=path
            )
        )
