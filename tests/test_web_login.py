"""The web login on a real ``davbox serve``: two steps, sessions, CSRF, timeouts, app passwords.

Browsers keep the ``__Host-davbox`` cookie (Secure) on loopback HTTP, but
``requests`` does not, so ``WebClient`` keeps cookies itself from each
response's Set-Cookie headers, sends them in a ``Cookie`` header, never
follows redirects (tests assert on the 303 and its Location) and reads the
CSRF token from the last page. Session ages are changed in the database
(``WebSession.created_at``/``last_seen``, UNIX seconds): that is the clock.

Most tests share one server (module scope) with ``two_factor_for: ["@phone"]``,
so one server has accounts under two-factor login (members of ``phone``) and
accounts outside it; each test makes its own accounts. Throttling runs on
servers of its own with the default limits.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from http.cookies import Morsel, SimpleCookie
from typing import Any

import pyotp
import pytest
import requests
from sqlalchemy import func, select

from davbox import accounts, app_passwords, twofactor
from davbox.db.models import User, WebSession
from davbox.passwords import hash_password
from tests.davserver import PASSWORD, DavboxServer

COOKIE = "__Host-davbox"
LANG_COOKIE = "davbox-lang"
NEW_PASSWORD = "a-new-password-for-the-web"
CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')
SECRET = re.compile(r'<code class="secret">([A-Z2-7]+)</code>')
APP_PASSWORD = re.compile(r'<code class="secret" id="new-app-password">([a-z2-9-]+)</code>')
RECOVERY_CODE = re.compile(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>")

EXPIRED_FORM = "This form has expired"
WRONG_LOGIN = "Wrong user name or password."
WRONG_CODE = "That code is not right, or was used already. Wait for a new code."
WRONG_SETUP_CODE = "That code is not right. Check the clock of your phone."
NEEDS_HTTPS = "Logging in needs a secure connection (HTTPS)."
TOO_MANY = "Too many failed attempts."


class WebClient:
    """One browser: its own cookies, no automatic redirects, the CSRF token of the last page."""

    def __init__(self, server: DavboxServer, cookies: dict[str, str] | None = None) -> None:
        self.url = server.url
        self.cookies: dict[str, str] = dict(cookies or {})
        self.csrf = ""
        self.set_cookies: dict[str, Morsel[str]] = {}  # from the last response
        self.raw_set_cookies: list[str] = []

    @property
    def token(self) -> str | None:
        return self.cookies.get(COOKIE)

    def request(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        response = requests.request(
            method, self.url + path, data=data, headers=sent, allow_redirects=False, timeout=10
        )
        self.raw_set_cookies = response.raw.headers.getlist("Set-Cookie")
        self.set_cookies = {}
        for header in self.raw_set_cookies:
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(header)
            for name, morsel in parsed.items():
                self.set_cookies[name] = morsel
                if _deletes(morsel):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        if found := CSRF.search(response.text):
            self.csrf = found.group(1)
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, fields: dict[str, Any], **kwargs: Any) -> requests.Response:
        """POST exactly ``fields`` (add ``"csrf": client.csrf`` to send the token)."""
        return self.request("POST", path, data=fields, **kwargs)

    def submit(self, path: str, fields: dict[str, Any]) -> requests.Response:
        """Open the page with the form at ``path``, then send it with that page's CSRF token."""
        self.get(path)
        return self.post(path, {"csrf": self.csrf, **fields})

    def log_in(self, name: str, password: str = PASSWORD) -> requests.Response:
        return self.submit("/login", {"username": name, "password": password})

    def enter_code(self, code: str) -> requests.Response:
        return self.submit("/login/code", {"code": code})

    def log_in_fully(self, account: Account, code: str | None = None) -> None:
        """Both steps (the code step only for an enrolled account), then the account page."""
        first = self.log_in(account.name, account.password)
        if account.secret is None:
            assert_redirect(first, "/account")
        else:
            assert_redirect(first, "/login/code")
            assert_redirect(self.enter_code(code or account.code()), "/account")
        assert self.get("/account").status_code == 200  # as a browser follows the redirect


def _deletes(morsel: Morsel[str]) -> bool:
    if morsel["max-age"] == "0":
        return True
    expires = morsel["expires"]
    return bool(expires) and parsedate_to_datetime(expires).timestamp() <= time.time()


def assert_redirect(response: requests.Response, location: str) -> None:
    assert (response.status_code, response.headers.get("Location")) == (303, location), (
        response.status_code,
        response.text[:500],
    )


@dataclass
class Account:
    name: str
    password: str = PASSWORD
    secret: str | None = None
    recovery_codes: list[str] = field(default_factory=list)

    def code(self, steps_ahead: int = 0) -> str:
        """The TOTP code ``steps_ahead`` 30-second steps from now (the server allows +1)."""
        assert self.secret is not None
        return pyotp.TOTP(self.secret).at(time.time() + 30 * steps_ahead)


_numbers = itertools.count(1)


@functools.cache
def _password_hash() -> str:
    """One argon2 hash of PASSWORD for every account (hashing each would double the run time)."""
    return hash_password(PASSWORD)


def make_account(
    server: DavboxServer, *, two_factor: bool = False, enrolled: bool = False
) -> Account:
    """A fresh account; ``two_factor`` puts it under two_factor_for, ``enrolled`` gives it TOTP."""
    account = Account(f"web{next(_numbers)}")
    with server.database().session() as session:
        session.add(User(name=account.name, password_hash=_password_hash()))
    if two_factor:
        accounts.change_group_members(server.database(), "phone", [account.name], [])
    if enrolled:
        account.secret, account.recovery_codes = enroll(server, account.name)
    return account


def enroll(server: DavboxServer, name: str) -> tuple[str, list[str]]:
    """What ``davbox 2fa enroll NAME`` does (the CLI itself is tested in test_twofactor.py)."""
    enrollment = twofactor.enroll(server.database(), name)
    secret = re.search(r"secret=([A-Z2-7]+)", enrollment.uri)
    assert secret is not None
    return secret.group(1), enrollment.recovery_codes


def wrong_code(secret: str) -> str:
    """A 6-digit code that is not valid for now, the step before or the step after."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    valid = {totp.at(now + 30 * steps) for steps in (-2, -1, 0, 1, 2)}
    return next(c for c in (f"{n:06d}" for n in range(123456, 10**6)) if c not in valid)


def session_rows(server: DavboxServer, name: str) -> int:
    with server.database().session() as session:
        return session.execute(
            select(func.count())
            .select_from(WebSession)
            .join(User, User.id == WebSession.user_id)
            .where(User.name == name)
        ).scalar_one()


def age_session(server: DavboxServer, token: str | None, **seconds_back: float) -> None:
    """Move a session's ``created_at``/``last_seen`` back in time (the database is the clock)."""
    assert token is not None
    digest = hashlib.sha256(token.encode()).hexdigest()
    with server.database().session() as session:
        row = session.execute(
            select(WebSession).where(WebSession.token_digest == digest)
        ).scalar_one()
        for name, seconds in seconds_back.items():
            setattr(row, name, getattr(row, name) - seconds)


def session_exists(server: DavboxServer, token: str | None) -> bool:
    assert token is not None
    digest = hashlib.sha256(token.encode()).hexdigest()
    with server.database().session() as session:
        found = session.execute(select(WebSession.id).where(WebSession.token_digest == digest))
        return found.first() is not None


def propfind(server: DavboxServer, path: str, auth: tuple[str, str], depth: str = "1") -> int:
    return requests.request(
        "PROPFIND", server.dav(path), headers={"Depth": depth}, auth=auth, timeout=10
    ).status_code


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    base = tmp_path_factory.mktemp("web")
    config = base / "davbox.yaml"
    # Every test here comes from 127.0.0.1: the per-address limit would add up
    # across tests. The throttle tests below use servers with the defaults.
    config.write_text('auth:\n  two_factor_for: ["@phone"]\n  throttle_address_failures: 1000\n')
    started = DavboxServer(base / "data", config=config).start()
    accounts.add_group(started.database(), "phone")
    yield started
    started.stop()


# -- the cookie and the headers ------------------------------------------------


@pytest.mark.parametrize(
    "enrolled",
    [
        pytest.param(False, id="after the password (no code due)"),
        pytest.param(True, id="after the code"),
    ],
)
def test_session_cookie_is_secure_httponly_strict_and_host_only(server, enrolled):
    account = make_account(server, enrolled=enrolled)
    client = WebClient(server)
    assert_redirect(client.log_in(account.name), "/login/code" if enrolled else "/account")
    if enrolled:
        assert_redirect(client.enter_code(account.code()), "/account")

    cookie = client.set_cookies[COOKIE]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["domain"] == ""
    raw = next(h for h in client.raw_set_cookies if h.startswith(COOKIE + "="))
    assert "domain" not in raw.lower(), "a __Host- cookie must not name a domain"


def _csp(response: requests.Response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    return {d.split()[0]: d.split()[1:] for d in header.split(";") if d.strip()}


@pytest.fixture(scope="module")
def logged_in(server: DavboxServer) -> WebClient:
    client = WebClient(server)
    client.log_in_fully(make_account(server))
    return client


@pytest.mark.parametrize(
    ("path", "status", "needs_login"),
    [
        pytest.param("/", 200, False, id="start page"),
        pytest.param("/login", 200, False, id="login page"),
        pytest.param("/no-such-page", 404, False, id="404 page"),
        pytest.param("/account", 303, False, id="redirect to the login"),
        pytest.param("/account", 200, True, id="account page"),
        pytest.param("/account/app-passwords", 200, True, id="app passwords page"),
        pytest.param("/account/2fa", 200, True, id="two-factor page"),
        pytest.param("/account/password", 200, True, id="password page"),
    ],
)
def test_pages_forbid_scripts_framing_and_caching(server, logged_in, path, status, needs_login):
    client = logged_in if needs_login else WebClient(server)
    response = client.get(path)

    assert response.status_code == status
    csp = _csp(response)
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in response.headers["Content-Security-Policy"]
    assert csp.get("script-src", csp["default-src"]) == ["'none'"], "no scripts at all"
    assert csp["frame-ancestors"] == ["'none'"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# -- the two login steps -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "first_step"),
    [
        pytest.param({}, "/account", id="outside two_factor_for, no TOTP: password alone"),
        pytest.param({"two_factor": True}, "/login/setup", id="under two_factor_for: set up first"),
        pytest.param({"enrolled": True}, "/login/code", id="has TOTP though not required: code"),
        pytest.param(
            {"two_factor": True, "enrolled": True}, "/login/code", id="under two_factor_for: code"
        ),
    ],
)
def test_where_the_password_step_leads(server, kind, first_step):
    account = make_account(server, **kind)
    client = WebClient(server)

    assert_redirect(client.log_in(account.name), first_step)
    page = client.get("/account")
    if first_step == "/account":
        assert page.status_code == 200
        assert f"Account: {account.name}" in page.text
    else:
        assert_redirect(page, first_step)


@pytest.mark.parametrize(
    ("name", "password", "status", "text"),
    [
        pytest.param("known", "not-the-password", 401, WRONG_LOGIN, id="wrong password"),
        pytest.param("nobody-here", PASSWORD, 401, WRONG_LOGIN, id="unknown user: same answer"),
        pytest.param("known", "", 400, "Enter your user name and password.", id="no password"),
    ],
)
def test_a_refused_password_step_starts_no_session(server, name, password, status, text):
    account = make_account(server)
    client = WebClient(server)

    response = client.log_in(account.name if name == "known" else name, password)

    assert response.status_code == status
    assert text in response.text
    assert COOKIE not in client.set_cookies
    assert session_rows(server, account.name) == 0


@pytest.mark.parametrize(
    ("method", "path", "status", "location"),
    [
        pytest.param("GET", "/account", 303, "/login/code", id="account page"),
        pytest.param("GET", "/account/app-passwords", 303, "/login/code", id="app passwords"),
        pytest.param("POST", "/account/app-passwords", 303, "/login/code", id="create app pw"),
        pytest.param("GET", "/account/2fa", 303, "/login/code", id="two-factor page"),
        pytest.param("GET", "/account/password", 303, "/login/code", id="password page"),
        pytest.param("PROPFIND", "/dav/", 401, None, id="WebDAV with the cookie, no Basic auth"),
        pytest.param("GET", "/dav/", 401, None, id="WebDAV GET with the cookie"),
    ],
)
def test_after_the_password_alone_nothing_opens(server, method, path, status, location):
    account = make_account(server, two_factor=True, enrolled=True)
    client = WebClient(server)
    assert_redirect(client.log_in(account.name), "/login/code")
    client.get("/login/code")

    fields = {"csrf": client.csrf, "action": "create", "label": "sneaky"}
    response = client.request(
        method, path, data=fields if method == "POST" else None, headers={"Depth": "1"}
    )

    assert response.status_code == status
    assert response.headers.get("Location") == location
    assert account.name not in response.text
    assert app_passwords.list_for(server.database(), account.name) == []


def test_two_steps_wrong_code_then_right_code(server):
    account = make_account(server, two_factor=True, enrolled=True)
    client = WebClient(server)
    assert_redirect(client.log_in(account.name), "/login/code")

    wrong = client.enter_code(wrong_code(account.secret))
    assert wrong.status_code == 401
    assert WRONG_CODE in wrong.text
    assert_redirect(client.get("/account"), "/login/code")

    assert_redirect(client.enter_code(account.code()), "/account")
    page = client.get("/account")
    assert page.status_code == 200
    assert f"Account: {account.name}" in page.text


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(lambda a: a.code(), id="TOTP code"),
        pytest.param(lambda a: f" {a.code()} ", id="TOTP code with spaces around"),
        pytest.param(lambda a: a.recovery_codes[3], id="recovery code"),
        pytest.param(
            lambda a: a.recovery_codes[3].upper().replace("-", ""), id="recovery code, capitals"
        ),
    ],
)
def test_the_code_step_accepts(server, typed):
    account = make_account(server, enrolled=True)
    client = WebClient(server)
    assert_redirect(client.log_in(account.name), "/login/code")

    assert_redirect(client.enter_code(typed(account)), "/account")


def test_each_step_issues_a_new_token_and_the_old_one_opens_nothing(server):
    account = make_account(server, enrolled=True)
    client = WebClient(server)
    client.log_in(account.name)
    after_password = client.token
    assert_redirect(client.enter_code(account.code()), "/account")
    after_code = client.token

    assert after_password and after_code and after_password != after_code
    stale = WebClient(server, {COOKIE: after_password})
    assert_redirect(stale.get("/account"), "/login")
    assert_redirect(stale.get("/login/code"), "/login")
    assert client.get("/account").status_code == 200


def test_a_totp_code_logs_in_once(server):
    account = make_account(server, enrolled=True)
    code = account.code()
    first, second = WebClient(server), WebClient(server)
    first.log_in_fully(account, code)

    assert_redirect(second.log_in(account.name), "/login/code")
    replay = second.enter_code(code)
    assert replay.status_code == 401
    assert WRONG_CODE in replay.text
    assert_redirect(second.get("/account"), "/login/code")
    assert_redirect(second.enter_code(account.code(1)), "/account")


def test_a_recovery_code_logs_in_once(server):
    account = make_account(server, enrolled=True)
    code = account.recovery_codes[0]
    first, second = WebClient(server), WebClient(server)
    first.log_in(account.name)
    assert_redirect(first.enter_code(code), "/account")

    second.log_in(account.name)
    replay = second.enter_code(code)
    assert replay.status_code == 401
    assert WRONG_CODE in replay.text
    assert_redirect(second.get("/account"), "/login/code")


def test_two_factor_setup_during_the_first_login(server):
    account = make_account(server, two_factor=True)
    client = WebClient(server)
    assert_redirect(client.log_in(account.name), "/login/setup")

    page = client.get("/login/setup")
    assert page.status_code == 200
    assert "<svg" in page.text, "the QR code is inline SVG (the CSP allows no scripts)"
    assert "Set up two-factor login" in page.text
    secret = SECRET.search(page.text).group(1)
    assert SECRET.search(client.get("/login/setup").text).group(1) == secret, "stable on reload"
    assert_redirect(client.get("/account"), "/login/setup")

    wrong = client.post(
        "/login/setup", {"csrf": client.csrf, "action": "confirm", "code": wrong_code(secret)}
    )
    assert wrong.status_code == 400
    assert WRONG_SETUP_CODE in wrong.text
    assert SECRET.search(wrong.text).group(1) == secret
    assert not twofactor.is_enrolled(server.database(), account.name)

    done = client.post(
        "/login/setup", {"csrf": client.csrf, "action": "confirm", "code": pyotp.TOTP(secret).now()}
    )
    assert done.status_code == 200
    assert "Two-factor login is on" in done.text
    codes = RECOVERY_CODE.findall(done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert done.headers["Cache-Control"] == "no-store"
    account_page = client.get("/account")
    assert account_page.status_code == 200
    assert "unused recovery codes: 10" in account_page.text
    assert not any(code in account_page.text for code in codes), "codes are shown only once"

    for code in codes:
        later = WebClient(server)
        assert_redirect(later.log_in(account.name), "/login/code")
        assert_redirect(later.enter_code(code), "/account")
    again = WebClient(server)
    again.log_in(account.name)
    assert again.enter_code(codes[0]).status_code == 401
    assert_redirect(WebClient(server, {COOKIE: again.token}).get("/account"), "/login/code")
    assert "unused recovery codes: 0" in client.get("/account").text


# -- CSRF ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="no token"),
        pytest.param("0" * 64, id="made-up token"),
        pytest.param("other browser", id="another browser's token"),
    ],
)
def test_login_form_without_its_csrf_token_is_refused(server, token):
    account = make_account(server)
    client = WebClient(server)
    client.get("/login")
    if token == "other browser":
        other = WebClient(server)
        other.get("/login")
        token = other.csrf
    fields = {"username": account.name, "password": PASSWORD}
    if token is not None:
        fields["csrf"] = token

    response = client.post("/login", fields)

    assert response.status_code == 400
    assert EXPIRED_FORM in response.text
    assert COOKIE not in client.set_cookies
    assert session_rows(server, account.name) == 0


def _no_app_password(server: DavboxServer, account: Account, client: WebClient) -> None:
    assert app_passwords.list_for(server.database(), account.name) == []


def _same_password(server: DavboxServer, account: Account, client: WebClient) -> None:
    assert_redirect(WebClient(server).log_in(account.name, PASSWORD), "/account")


def _no_setup_started(server: DavboxServer, account: Account, client: WebClient) -> None:
    assert "<svg" not in client.get("/account/2fa").text, "no two-factor set-up was started"


def _still_logged_in(server: DavboxServer, account: Account, client: WebClient) -> None:
    assert session_rows(server, account.name) == 1


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="no token"),
        pytest.param("0" * 43, id="made-up token"),
        pytest.param("other session", id="another session's token"),
    ],
)
@pytest.mark.parametrize(
    ("path", "fields", "unchanged"),
    [
        pytest.param(
            "/account/app-passwords",
            {"action": "create", "label": "forged"},
            _no_app_password,
            id="new app password",
        ),
        pytest.param(
            "/account/password",
            {"current": PASSWORD, "new": NEW_PASSWORD, "repeat": NEW_PASSWORD},
            _same_password,
            id="change password",
        ),
        pytest.param("/account/2fa", {"action": "start"}, _no_setup_started, id="set up 2FA"),
        pytest.param("/logout", {}, _still_logged_in, id="log out"),
    ],
)
def test_account_forms_without_their_csrf_token_change_nothing(
    server, logged_in, path, fields, unchanged, token
):
    account = make_account(server)
    client = WebClient(server)
    client.log_in_fully(account)
    if token == "other session":
        token = logged_in.csrf
        assert token and token != client.csrf
    if token is not None:
        fields = {**fields, "csrf": token}
    before = client.token

    response = client.post(path, fields)

    assert response.status_code == 400
    assert EXPIRED_FORM in response.text
    assert client.token == before and COOKIE not in client.set_cookies
    unchanged(server, account, client)
    assert client.get("/account").status_code == 200, "the session still works"


def test_code_form_without_its_csrf_token_does_not_use_the_code(server):
    account = make_account(server, enrolled=True)
    client = WebClient(server)
    client.log_in(account.name)
    code = account.code()

    forged = client.post("/login/code", {"csrf": "0" * 43, "code": code})

    assert forged.status_code == 400
    assert EXPIRED_FORM in forged.text
    assert_redirect(client.enter_code(code), "/account")


# -- logout and timeouts -------------------------------------------------------


def test_logout_ends_the_session(server):
    account = make_account(server, enrolled=True)
    client = WebClient(server)
    client.log_in_fully(account)
    token = client.token

    assert client.get("/logout").status_code == 405, "a link or image cannot log anyone out"
    response = client.post("/logout", {"csrf": client.csrf})

    assert response.status_code == 200
    assert "You are logged out." in response.text
    assert client.set_cookies[COOKIE]["max-age"] == "0"
    assert COOKIE not in client.cookies
    assert not session_exists(server, token)
    assert_redirect(WebClient(server, {COOKIE: token}).get("/account"), "/login")


@pytest.mark.parametrize(
    ("stage", "back", "alive"),
    [
        pytest.param("full", {"last_seen": 1700}, True, id="idle 1700 s: still logged in"),
        pytest.param("full", {"last_seen": 1801}, False, id="idle past session_idle_timeout"),
        pytest.param(
            "full", {"created_at": 43000}, True, id="in use, 43000 s old: still logged in"
        ),
        pytest.param("full", {"created_at": 43201}, False, id="in use, past session_max_age"),
        pytest.param("password", {"created_at": 290}, True, id="code within login_step_timeout"),
        pytest.param("password", {"created_at": 301}, False, id="code after login_step_timeout"),
        pytest.param("enroll", {"created_at": 301}, False, id="setup after login_step_timeout"),
    ],
)
def test_session_timeouts(server, stage, back, alive):
    account = make_account(server, two_factor=stage == "enroll", enrolled=stage == "password")
    client = WebClient(server)
    client.log_in(account.name)
    if stage == "password":
        client.get("/login/code")  # the form's CSRF token, read in time
    token = client.token

    age_session(server, token, **back)
    if stage == "full":
        response = client.get("/account")
        expected = (200, None) if alive else (303, "/login")
    elif stage == "password":
        response = client.post("/login/code", {"csrf": client.csrf, "code": account.code()})
        expected = (303, "/account" if alive else "/login")
    else:
        response = client.get("/login/setup")
        expected = (200, None) if alive else (303, "/login")

    assert (response.status_code, response.headers.get("Location")) == expected
    if not alive:
        assert not session_exists(server, token), "an expired session is deleted when met"


# -- changes that end sessions -------------------------------------------------


def test_password_change_on_the_web_ends_the_other_sessions(server):
    account = make_account(server)
    here, there = WebClient(server), WebClient(server)
    here.log_in_fully(account)
    there.log_in_fully(account)
    before = here.token

    response = here.submit(
        "/account/password", {"current": PASSWORD, "new": NEW_PASSWORD, "repeat": NEW_PASSWORD}
    )

    assert response.status_code == 200
    assert "Your password was changed." in response.text
    assert "Your other browser sessions have ended." in response.text
    assert here.token != before, "a new token after the change"
    assert here.get("/account").status_code == 200
    assert_redirect(there.get("/account"), "/login")
    old = WebClient(server).log_in(account.name, PASSWORD)
    assert old.status_code == 401 and WRONG_LOGIN in old.text
    assert_redirect(WebClient(server).log_in(account.name, NEW_PASSWORD), "/account")


@pytest.mark.parametrize(
    ("current", "new", "repeat", "text"),
    [
        pytest.param(
            "not-my-password", NEW_PASSWORD, NEW_PASSWORD,
            "Your current password is not right.", id="wrong current password",
        ),
        pytest.param(
            PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x",
            "The new passwords differ.", id="repeat differs",
        ),
        pytest.param(
            PASSWORD, "short", "short",
            "Choose a longer password: at least 10 characters.", id="too short",
        ),
    ],
)  # fmt: skip
def test_a_refused_password_change_changes_nothing(server, current, new, repeat, text):
    account = make_account(server)
    here, there = WebClient(server), WebClient(server)
    here.log_in_fully(account)
    there.log_in_fully(account)

    response = here.submit("/account/password", {"current": current, "new": new, "repeat": repeat})

    assert response.status_code == 400
    assert text in response.text
    assert here.get("/account").status_code == 200
    assert there.get("/account").status_code == 200
    assert_redirect(WebClient(server).log_in(account.name, PASSWORD), "/account")


@pytest.mark.parametrize(
    ("command", "stdin", "enrolled"),
    [
        pytest.param(("user", "passwd", "{}", "--password-stdin"), NEW_PASSWORD + "\n", False,
                     id="davbox user passwd"),
        pytest.param(("2fa", "reset", "{}"), None, True, id="davbox 2fa reset"),
        pytest.param(("2fa", "enroll", "{}", "--no-qr"), None, True, id="davbox 2fa enroll"),
        pytest.param(("user", "disable", "{}"), None, False, id="davbox user disable"),
        pytest.param(("user", "remove", "{}"), None, False, id="davbox user remove"),
    ],
)  # fmt: skip
def test_admin_commands_end_all_sessions_of_the_account(server, command, stdin, enrolled):
    account = make_account(server, enrolled=enrolled)
    bystander = make_account(server)
    first, second, other = WebClient(server), WebClient(server), WebClient(server)
    first.log_in_fully(account, account.code() if enrolled else None)
    second.log_in_fully(account, account.code(1) if enrolled else None)
    other.log_in_fully(bystander)

    server.cli(*(part.format(account.name) for part in command), input=stdin)

    assert_redirect(first.get("/account"), "/login")
    assert_redirect(second.get("/account"), "/login")
    assert other.get("/account").status_code == 200, "other accounts keep their sessions"


def test_a_disabled_account_cannot_log_in_and_its_session_stays_ended(server):
    account = make_account(server)
    client = WebClient(server)
    client.log_in_fully(account)

    server.cli("user", "disable", account.name)
    refused = WebClient(server).log_in(account.name)
    assert refused.status_code == 401 and WRONG_LOGIN in refused.text
    server.cli("user", "enable", account.name)

    assert_redirect(client.get("/account"), "/login")


def test_a_new_phone_ends_the_other_sessions_but_not_this_one(server):
    account = make_account(server, enrolled=True)
    here, there = WebClient(server), WebClient(server)
    here.log_in_fully(account, account.code())
    there.log_in_fully(account, account.code(1))

    page = here.get("/account/2fa")
    assert "Two-factor login is on for your account." in page.text
    started = here.post("/account/2fa", {"csrf": here.csrf, "action": "start"})
    assert started.status_code == 200 and "<svg" in started.text
    secret = SECRET.search(started.text).group(1)
    assert secret != account.secret
    assert there.get("/account").status_code == 200, "nothing changes before the confirmation"

    done = here.post(
        "/account/2fa", {"csrf": here.csrf, "action": "confirm", "code": pyotp.TOTP(secret).now()}
    )

    assert done.status_code == 200
    assert len(RECOVERY_CODE.findall(done.text)) == 10
    assert here.get("/account").status_code == 200, "the confirming session stays"
    assert_redirect(there.get("/account"), "/login")
    later = WebClient(server)
    later.log_in(account.name)
    assert later.enter_code(account.recovery_codes[0]).status_code == 401, "old codes are gone"
    assert_redirect(later.enter_code(pyotp.TOTP(secret).at(time.time() + 30)), "/account")


# -- app passwords -------------------------------------------------------------


def test_app_password_made_on_the_web(server):
    account = make_account(server, two_factor=True, enrolled=True)
    inbox = server.mailbox(f"{account.name}-in", **{account.name: "member"})
    other = server.mailbox(f"{account.name}-other", **{account.name: "member"})
    client = WebClient(server)
    client.log_in_fully(account)

    made = client.submit(
        "/account/app-passwords",
        {"action": "create", "label": "scanner", "mailbox": inbox, "read_only": "1"},
    )

    assert made.status_code == 200
    assert made.headers["Cache-Control"] == "no-store"
    password = APP_PASSWORD.search(made.text).group(1)
    assert made.text.count(password) == 1
    listing = client.get("/account/app-passwords")
    assert password not in listing.text, "shown only in the answer to the POST"
    assert "scanner" in listing.text and f"{inbox}, read only" in listing.text
    assert "never" in listing.text

    auth = (account.name, password)
    assert propfind(server, f"{inbox}/", auth) == 207
    assert propfind(server, f"{other}/", auth) == 404, "outside its limit"
    put = requests.put(server.dav(f"{inbox}/x.txt"), data=b"x", auth=auth, timeout=10)
    assert put.status_code == 403
    assert propfind(server, f"{inbox}/", (account.name, PASSWORD)) == 401, "account password"

    used = client.get("/account/app-passwords")
    assert "UTC from 127.0.0.1" in used.text
    assert "never" not in used.text

    duplicate = client.submit("/account/app-passwords", {"action": "create", "label": "scanner"})
    assert duplicate.status_code == 400
    assert "You already have an app password with that name." in duplicate.text
    assert 'id="new-app-password"' not in duplicate.text
    assert len(app_passwords.list_for(server.database(), account.name)) == 1

    revoked = client.submit("/account/app-passwords", {"action": "revoke", "label": "scanner"})
    assert revoked.status_code == 200
    assert "You have no app passwords yet." in revoked.text
    deadline = time.monotonic() + 3
    while propfind(server, f"{inbox}/", auth) != 401:
        assert time.monotonic() < deadline, "a revoked app password must stop working"
        time.sleep(0.2)


# -- throttling ----------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        pytest.param("password", id="wrong passwords"),
        pytest.param("code", id="wrong codes"),
        pytest.param("code again", id="wrong codes, the right password again halfway"),
    ],
)
def test_web_logins_are_throttled_with_the_default_limits(make_server, step):
    server = make_server(f"throttle-{step.replace(' ', '-')}")
    account = make_account(server, enrolled=step != "password")
    client = WebClient(server)
    if step != "password":
        assert_redirect(client.log_in(account.name), "/login/code")

    def attempt(right: bool) -> requests.Response:
        if step == "password":
            return client.log_in(account.name, PASSWORD if right else "wrong-password")
        return client.enter_code(account.code() if right else wrong_code(account.secret))

    for number in range(10):
        if step == "code again" and number == 5:
            # Knowing the password must not buy fresh guesses at the code.
            assert_redirect(client.log_in(account.name), "/login/code")
        failed = attempt(right=False)
        assert failed.status_code == 401
        assert (WRONG_LOGIN if step == "password" else WRONG_CODE) in failed.text
    blocked = attempt(right=True)

    assert blocked.status_code == 429
    retry_after = int(blocked.headers["Retry-After"])
    assert retry_after >= 1
    assert f"{TOO_MANY} Wait {retry_after} seconds and try again." in blocked.text
    if step == "password":
        assert COOKIE not in client.set_cookies and COOKIE not in client.cookies
    else:
        assert_redirect(client.get("/account"), "/login/code")


# -- languages, transport, other pages -----------------------------------------


@pytest.mark.parametrize(
    ("accept", "query", "lang", "heading"),
    [
        pytest.param("nl-NL,nl;q=0.9", "", "nl", "Inloggen", id="Dutch browser"),
        pytest.param("nl-NL,nl;q=0.9", "?lang=en", "en", "Log in", id="?lang=en wins"),
        pytest.param("en-US,en;q=0.9", "?lang=nl", "nl", "Inloggen", id="?lang=nl wins"),
        pytest.param("de-DE,de;q=0.9", "", "en", "Log in", id="German browser: English"),
    ],
)
def test_login_page_language(server, accept, query, lang, heading):
    response = WebClient(server).get("/login" + query, headers={"Accept-Language": accept})

    assert f'<html lang="{lang}">' in response.text
    assert f"<h1>{heading}</h1>" in response.text


def test_a_chosen_language_is_remembered_in_a_cookie(server):
    client = WebClient(server)
    dutch = {"Accept-Language": "nl-NL,nl;q=0.9"}

    chosen = client.get("/login?lang=en", headers=dutch)
    assert client.set_cookies[LANG_COOKIE].value == "en"
    assert "<h1>Log in</h1>" in chosen.text

    later = client.get("/login", headers=dutch)
    assert '<html lang="en">' in later.text
    assert "<h1>Log in</h1>" in later.text


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("files.example.org", id="host name"),
        pytest.param("files.example.org:8080", id="host name and port"),
        pytest.param("192.0.2.10:8080", id="public IPv4 address"),
        pytest.param("[2001:db8::1]:8080", id="public IPv6 address"),
    ],
)
def test_plain_http_to_a_public_address_offers_no_login(server, host):
    account = make_account(server)
    client = WebClient(server)

    page = client.get("/login", headers={"Host": host})
    assert page.status_code == 200
    assert NEEDS_HTTPS in page.text
    assert 'name="password"' not in page.text

    client.get("/login")  # the form's CSRF token, from the loopback address
    posted = client.post(
        "/login",
        {"csrf": client.csrf, "username": account.name, "password": PASSWORD},
        headers={"Host": host},
    )
    assert posted.status_code == 400
    assert NEEDS_HTTPS in posted.text
    assert COOKIE not in client.set_cookies
    assert session_rows(server, account.name) == 0


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1:{port}", id="IPv4 loopback"),
        pytest.param("127.0.0.1", id="IPv4 loopback, port 80"),
        pytest.param("[::1]:{port}", id="IPv6 loopback"),
        pytest.param("[::1]", id="IPv6 loopback, port 80"),
    ],
)
def test_plain_http_on_loopback_offers_the_login(server, host):
    account = make_account(server)
    client = WebClient(server)
    headers = {"Host": host.format(port=server.port)}

    page = client.get("/login", headers=headers)
    assert 'name="password"' in page.text
    assert NEEDS_HTTPS not in page.text
    posted = client.post(
        "/login",
        {"csrf": client.csrf, "username": account.name, "password": PASSWORD},
        headers=headers,
    )
    assert_redirect(posted, "/account")


def test_unknown_pages_are_404(server):
    response = WebClient(server).get("/no/such/page")

    assert response.status_code == 404
    assert "Page not found" in response.text


def test_start_page_names_the_webdav_address(server):
    response = WebClient(server).get("/")

    assert response.status_code == 200
    assert f"<code>{server.url}/dav/</code>" in response.text
