"""Nextcloud Login Flow v2 over HTTP (``davbox.compat.loginflow`` holds the state).

Routes (``RULES``):
- ``POST /index.php/login/v2``: a client starts a flow; JSON with ``login``
  (the page to open in a browser) and ``poll`` (``token``, ``endpoint``).
- ``GET/POST /index.php/login/v2/flow/<token>``: the page. Without a full web
  login (password and, where required, the code) the browser is sent to log
  in first and comes back here; then "Grant access" / "Cancel" (POST with the
  session's CSRF token). Granting is a ``login-succeeded`` record
  (``method="login-flow"``), cancelling a ``login-refused`` one (``denied``).
- ``POST /index.php/login/v2/poll`` (form field ``token``): 404 until
  granted, then once JSON ``server``, ``loginName``, ``appPassword``; the
  app password's issue is a ``login-succeeded`` record (``via="login-flow"``).
Unknown, expired and used tokens get the same 404. Answers with tokens or the
password say ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from davbox.compat.loginflow import LoginFlows
from davbox.events import EventBus, LoginRefused, LoginSucceeded, request_context

if TYPE_CHECKING:
    from davbox.admin_ui.web import Page, WebApp

START = "/index.php/login/v2"
FLOW = START + "/flow/"
RULES = [
    Rule(START, endpoint="loginflow_start", methods=["POST"]),
    Rule(START + "/poll", endpoint="loginflow_poll", methods=["POST"]),
    Rule(FLOW + "<token>", endpoint="loginflow_page", methods=["GET", "HEAD", "POST"]),
]
NEXT_COOKIE = "__Host-davbox-next"


def _json(status: int, data: dict[str, Any]) -> Response:
    response = Response(json.dumps(data), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


class LoginFlowPages:
    def __init__(self, flows: LoginFlows, events: EventBus, public_url: str | None) -> None:
        self.flows = flows
        self.events = events
        self.public_url = public_url
        self._web: WebApp | None = None

    def attach(self, web: WebApp) -> None:
        self._web = web

    @property
    def web(self) -> WebApp:
        assert self._web is not None, "LoginFlowPages.attach(web) first"
        return self._web

    def _base(self, page: Page) -> str:
        return (self.public_url or page.request.host_url).rstrip("/")

    def on_loginflow_start(self, page: Page) -> Response:
        login, poll = self.flows.start(page.request.headers.get("User-Agent", ""))
        base = self._base(page)
        return _json(
            200,
            {
                "poll": {"token": poll, "endpoint": f"{base}{START}/poll"},
                "login": f"{base}{FLOW}{login}",
            },
        )

    def on_loginflow_poll(self, page: Page) -> Response:
        token = page.request.form.get("token", "")
        granted = self.flows.poll(token) if token else None
        if granted is None:
            return _json(404, {})
        context = {**request_context(page.request.environ), "actor": granted.username}
        self.events.emit(LoginSucceeded(**context, method="app-password", via="login-flow"))
        return _json(
            200,
            {
                "server": self._base(page),
                "loginName": granted.username,
                "appPassword": granted.app_password,
            },
        )

    def on_loginflow_page(self, page: Page, token: str) -> Response:
        flow = self.flows.find(token)
        if flow is None or flow.granted_to is not None:
            return self.web.render(
                page,
                "message.html",
                404,
                title=page._("This login link is not valid"),
                text=page._("It was used already or has expired. Start again from your app."),
            )
        if (elsewhere := self.web._full(page)) is not None:
            page.cookies.append((NEXT_COOKIE, FLOW + token))  # back here after logging in
            return elsewhere
        assert page.session is not None
        request = page.request
        if request.method == "POST":
            if not self.web._csrf_ok(page):
                return self.web._bad_form(page)
            if request.form.get("action") != "grant":
                self.flows.deny(flow.id)
                context = {**request_context(request.environ), "actor": page.session.username}
                self.events.emit(
                    LoginRefused(**context, outcome="denied", status=200, via="login-flow")
                )
                return self.web.render(page, "message.html", title=page._("Access not granted"),
                                       back=True)  # fmt: skip
            if not self.flows.grant(flow.id, page.session.username):
                return self.web.render(page, "message.html", 409,
                                       title=page._("This login link is not valid"))  # fmt: skip
            context = {**request_context(request.environ), "actor": page.session.username}
            self.events.emit(LoginSucceeded(**context, method="login-flow", via="web"))
            return self.web.render(
                page,
                "message.html",
                title=page._("Access granted"),
                text=page._("You can close this window; your app is connected now."),
            )
        return self.web.render(
            page, "login_flow.html", client=flow.client, account=page.session.username
        )
