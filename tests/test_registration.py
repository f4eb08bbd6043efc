"""Self-registration against a real server and a real SMTP server (aiosmtpd).

- An address in an allowed domain gets a mail with ``<public_url>/register/verify/<token>``;
  opening the link (GET) changes nothing, the button (POST) makes the account
  (name = the address, in lower case), which then logs in like any other
  (and must set up two-factor login: ``auth.two_factor_for: ["*"]`` here).
- A link works once; expired, used, replaced and unknown links get one page.
- Addresses outside the allowed domains are refused with a clear message;
  subdomains only where listed as ``*.domain``.
- An address that has an account gets the same page and a notice mail, no
  link and no second account.
- The password is in no mail, log line, audit record or database row in
  clear; the token is in no log line.
- Requests per address are throttled; pages speak Dutch; every step is an
  audit record.
- In-process: the domain rule as a table, the settings' checks, throttling
  per client address and purging.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select, update

from davbox import accounts
from davbox.config import ConfigError, settings_from_text
from davbox.config.schema import RegistrationSettings
from davbox.db import Database
from davbox.db.models import Registration, User
from davbox.mail import Outbox
from davbox.passwords import verify_password
from davbox.registration import Registrations, domain_allowed
from davbox.throttle import Throttled
from tests.davserver import PASSWORD, DavboxServer
from tests.smtpd import Received, SmtpServer
from tests.test_web_login import WebClient, assert_redirect

CONFIG = """
server:
  public_url: http://127.0.0.1:{port}
auth:
  two_factor_for: ["*"]
mail:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  from_address: davbox@example.org
  poll_interval: 0.2
web:
  registration:
    enabled: true
    allowed_domains: ["Rijk.Example.NL", "*.gemeente.example"]
    requests_per_address: 3
    requests_per_client: 200
    grants:
      inbox: dropper
      nosuchbox: reader
"""
SECRET_PASSWORD = "Zeer-Geheim-Wachtwoord-4711"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/register/verify/([A-Za-z0-9_-]+)")
CHECK_MAIL = "Check your mail"
GONE = "This link does not work (any more)"
DOMAIN_REFUSED = (
    "Accounts can only be made with a mail address of a connected organisation,"
    " and {domain} is not one of them."
)


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[DavboxServer]:
    base = tmp_path_factory.mktemp("registration")
    config = base / "davbox.yaml"
    srv = DavboxServer(base / "data", config=config)
    config.write_text(CONFIG.format(port=srv.port, smtp_port=smtp.port))
    srv.start()
    yield srv
    srv.stop()


def register(
    server: DavboxServer, address: str, password: str = PASSWORD, lang: str = "en", **extra: str
) -> requests.Response:
    client = WebClient(server)
    client.get(f"/register?lang={lang}")
    fields = {
        "csrf": client.csrf,
        "email": address,
        "display_name": "Jan Jansen",
        "password": password,
        "repeat": password,
        **extra,
    }
    return client.post("/register", fields)


def mails_to(smtp: SmtpServer, address: str, count: int = 1) -> list[Received]:
    deadline = time.monotonic() + 20
    while True:
        found = [m for m in smtp.messages if m.envelope_to == [address]]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def link_in(mail: Received) -> tuple[str, str]:
    found = LINK.search(mail.text)
    assert found, mail.text
    return found.group(1), found.group(2)


def users_named(server: DavboxServer, name: str) -> list[User]:
    with server.database().session() as session:
        return list(session.execute(select(User).where(User.name == name)).scalars())


def records(server: DavboxServer, kind: str) -> list[dict[str, Any]]:
    out = server.cli("audit", "query", "--event", kind, "--format", "json").stdout
    return json.loads(out)


def page_text(response: requests.Response) -> str:
    """The page without its per-visitor parts (the CSRF token)."""
    return re.sub(r'name="csrf" value="[^"]+"', "", response.text)


def test_the_link_opens_a_button_and_only_the_button_makes_the_account(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    answer = register(server, "Jan.Jansen@RIJK.example.nl")
    assert answer.status_code == 200
    assert CHECK_MAIL in answer.text
    [mail] = mails_to(smtp, "jan.jansen@rijk.example.nl")
    assert mail.subject == "Confirm your davbox account"
    base, token = link_in(mail)
    assert base == server.url
    assert "Jan Jansen" not in mail.text  # nothing the visitor typed but the address

    browser = WebClient(server)
    for _ in range(2):  # a mail scanner opening the link makes nothing
        shown = browser.get(f"/register/verify/{token}")
        assert shown.status_code == 200
        assert "Make my account" in shown.text
    assert users_named(server, "jan.jansen@rijk.example.nl") == []

    made = browser.post(f"/register/verify/{token}", {"csrf": browser.csrf})
    assert made.status_code == 200, made.text
    assert "Your account is ready" in made.text
    assert "jan.jansen@rijk.example.nl" in made.text
    [user] = users_named(server, "jan.jansen@rijk.example.nl")
    assert (user.email, user.display_name, user.source) == (
        "jan.jansen@rijk.example.nl",
        "Jan Jansen",
        "local",
    )
    assert ("jan.jansen@rijk.example.nl", "dropper") in next(
        box.grants for box in accounts.list_mailboxes(server.database()) if box.name == "inbox"
    )

    # It logs in like any account, and two_factor_for: ["*"] covers it.
    assert_redirect(WebClient(server).log_in("jan.jansen@rijk.example.nl"), "/login/setup")

    # The link worked once: POST and GET now get the page an unknown link gets.
    again = browser.post(f"/register/verify/{token}", {"csrf": browser.csrf})
    unknown = browser.get("/register/verify/" + "A" * 43)
    assert again.status_code == browser.get(f"/register/verify/{token}").status_code == 404
    assert unknown.status_code == 404
    assert GONE in again.text
    assert page_text(again) == page_text(unknown)
    assert len(users_named(server, "jan.jansen@rijk.example.nl")) == 1

    [requested] = [r for r in records(server, "registration-requested") if r["email"] == user.email]
    assert (requested["outcome"], requested["status"]) == ("link", 200)
    [registered] = [r for r in records(server, "account-registered") if r["actor"] == user.name]
    assert registered["grants"] == ["inbox:dropper"]
    refused = [r for r in records(server, "registration-refused") if r["reason"] == "link"]
    assert len(refused) >= 3


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        pytest.param("a@evil.example", False, id="other-domain"),
        pytest.param("a@sub.rijk.example.nl", False, id="subdomain-not-listed"),
        pytest.param("a@rijk.example.nl.evil.example", False, id="suffix-trick"),
        pytest.param("a@gemeente.example", False, id="wildcard-not-the-domain-itself"),
        pytest.param("a@x.gemeente.example", True, id="wildcard-subdomain"),
        pytest.param("a@RIJK.EXAMPLE.NL", True, id="any-case"),
    ],
)
def test_only_allowed_domains_may_register(
    server: DavboxServer, smtp: SmtpServer, address: str, allowed: bool
) -> None:
    answer = register(server, address)
    if allowed:
        assert answer.status_code == 200
        assert mails_to(smtp, address.lower())
        return
    domain = address.rpartition("@")[2]
    assert answer.status_code == 403
    assert DOMAIN_REFUSED.format(domain=domain) in answer.text
    assert 'value="Jan Jansen"' in answer.text  # what was typed stays, but the password
    assert PASSWORD not in answer.text
    time.sleep(0.5)
    assert [m for m in smtp.messages if m.envelope_to == [address.lower()]] == []
    assert any(
        r["email"] == address and r["reason"] == "domain" and r["status"] == 403
        for r in records(server, "registration-refused")
    )


def test_an_address_with_an_account_gets_the_same_answer_and_a_notice(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    accounts.add_user(server.database(), "piet", PASSWORD, email="Piet@rijk.example.nl")
    known = register(server, "piet@rijk.example.nl")
    new = register(server, "klaas@rijk.example.nl")
    assert known.status_code == new.status_code == 200
    assert page_text(known).replace("piet@", "X@") == page_text(new).replace("klaas@", "X@")

    [notice] = mails_to(smtp, "piet@rijk.example.nl")
    assert notice.subject == "You already have a davbox account"
    assert "/register/verify/" not in notice.text
    assert "/login" in notice.text
    assert users_named(server, "piet@rijk.example.nl") == []
    with server.database().session() as session:
        same_address = session.execute(
            select(func.count()).where(func.lower(User.email) == "piet@rijk.example.nl")
        ).scalar_one()
    assert same_address == 1
    outcomes = {
        r["email"]: r["outcome"]
        for r in records(server, "registration-requested")
        if r["email"] in ("piet@rijk.example.nl", "klaas@rijk.example.nl")
    }
    assert outcomes == {"piet@rijk.example.nl": "notice", "klaas@rijk.example.nl": "link"}


def test_an_expired_link_makes_nothing(server: DavboxServer, smtp: SmtpServer) -> None:
    register(server, "laat@rijk.example.nl")
    _, token = link_in(mails_to(smtp, "laat@rijk.example.nl")[0])
    with server.database().session() as session:
        session.execute(
            update(Registration)
            .where(Registration.email == "laat@rijk.example.nl")
            .values(expires_at=time.time() - 1)
        )
    browser = WebClient(server)
    shown = browser.get(f"/register/verify/{token}")
    assert shown.status_code == 404
    assert GONE in shown.text
    browser.get("/register")  # a CSRF token for the POST
    made = browser.post(f"/register/verify/{token}", {"csrf": browser.csrf})
    assert made.status_code == 404
    assert users_named(server, "laat@rijk.example.nl") == []


def test_a_new_request_replaces_the_older_link(server: DavboxServer, smtp: SmtpServer) -> None:
    register(server, "twee@rijk.example.nl")
    register(server, "twee@rijk.example.nl", password="the-second-password")
    first, second = (link_in(m)[1] for m in mails_to(smtp, "twee@rijk.example.nl", 2))
    browser = WebClient(server)
    assert browser.get(f"/register/verify/{first}").status_code == 404
    assert browser.get(f"/register/verify/{second}").status_code == 200
    assert browser.post(f"/register/verify/{second}", {"csrf": browser.csrf}).status_code == 200
    assert_redirect(
        WebClient(server).log_in("twee@rijk.example.nl", "the-second-password"), "/login/setup"
    )


def test_the_password_is_never_in_clear_and_the_token_not_in_the_log(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    address = "geheim@rijk.example.nl"
    assert register(server, address, password=SECRET_PASSWORD).status_code == 200
    [mail] = mails_to(smtp, address)
    _, token = link_in(mail)
    with server.database().session() as session:
        row = session.execute(
            select(Registration).where(Registration.email == address)
        ).scalar_one()
        assert row.password_hash is not None and row.password_hash.startswith("$argon2id$")
        assert row.digest is not None and token not in row.digest
    browser = WebClient(server)
    browser.get(f"/register/verify/{token}")
    assert browser.post(f"/register/verify/{token}", {"csrf": browser.csrf}).status_code == 200
    [user] = users_named(server, address)
    assert verify_password(user.password_hash, SECRET_PASSWORD)
    with server.database().session() as session:
        row = session.execute(
            select(Registration).where(Registration.email == address)
        ).scalar_one()
        assert (row.state, row.password_hash, row.digest) == ("used", None, None)

    secret = SECRET_PASSWORD.encode()
    assert all(secret not in m.raw for m in smtp.messages)
    log = server.log_text(until="/register/verify/-").encode()
    assert b"/register/verify/-" in log  # the access log saw the link, without its token
    assert secret not in log and token.encode() not in log
    audit = server.cli("audit", "query", "--format", "json").stdout
    assert SECRET_PASSWORD not in audit and token not in audit
    for path in server.data_dir.glob("davbox.db*"):
        assert secret not in path.read_bytes(), path
    # The token was in the queued mail's body, which is emptied once sent:
    # now no row holds it (old page images in SQLite's WAL may, until a checkpoint).
    raw = server.database().engine.raw_connection()
    try:
        dump = "\n".join(raw.iterdump())  # type: ignore[attr-defined]
    finally:
        raw.close()
    assert token not in dump and SECRET_PASSWORD not in dump


def test_requests_for_one_address_are_throttled(server: DavboxServer, smtp: SmtpServer) -> None:
    address = "vaak@rijk.example.nl"
    for _ in range(3):
        assert register(server, address).status_code == 200
    answer = register(server, address)
    assert answer.status_code == 429
    assert "Too many requests for an account. Try again in 60 minutes." in answer.text
    assert 3500 < int(answer.headers["Retry-After"]) <= 3601
    time.sleep(0.5)
    assert len(mails_to(smtp, address, 3)) == 3
    assert any(
        r["email"] == address and r["reason"] == "throttled"
        for r in records(server, "registration-refused")
    )


def test_form_mistakes_and_missing_csrf_send_nothing(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    address = "fout@rijk.example.nl"
    different = register(server, address, repeat="something-else-entirely")
    assert different.status_code == 400
    assert "The passwords differ." in different.text
    short = register(server, address, password="kort", repeat="kort")
    assert short.status_code == 400
    assert "Choose a longer password: at least 10 characters." in short.text
    plus = register(server, "jan+werk@rijk.example.nl")
    assert plus.status_code == 400
    assert "This mail address cannot be used for an account here." in plus.text
    forged = WebClient(server).post(
        "/register",
        {"email": address, "display_name": "X", "password": PASSWORD, "repeat": PASSWORD},
    )
    assert forged.status_code == 400
    time.sleep(0.5)
    assert [m for m in smtp.messages if m.envelope_to == [address]] == []


def test_pages_and_mails_in_dutch(server: DavboxServer, smtp: SmtpServer) -> None:
    login = requests.get(f"{server.url}/login?lang=nl", timeout=10)
    assert "Nog geen account? Maak er een aan" in login.text
    form = requests.get(f"{server.url}/register?lang=nl", timeout=10)
    assert "Account aanmaken" in form.text
    assert "binnen 24 uur" in form.text
    answer = register(server, "nl@rijk.example.nl", lang="nl")
    assert "Kijk in uw mail" in answer.text
    [mail] = mails_to(smtp, "nl@rijk.example.nl")
    assert mail.subject == "Bevestig uw account bij davbox"
    assert "24 uur lang" in mail.text
    refused = register(server, "nl@elders.example", lang="nl")
    assert "elders.example is daar geen van" in refused.text


def test_the_cli_lists_pending_requests_without_tokens(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    register(server, "wacht@rijk.example.nl")
    _, token = link_in(mails_to(smtp, "wacht@rijk.example.nl")[0])
    listed = server.cli("registration", "list").stdout
    assert "wacht@rijk.example.nl\tJan Jansen\t127.0.0.1" in listed
    assert token not in listed
    assert server.cli("registration", "purge").stdout.startswith("expired ")


# -- in-process --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed", "expected"),
    [
        pytest.param("a@example.org", ["example.org"], True, id="exact"),
        pytest.param("a@EXAMPLE.org", ["example.org"], True, id="case"),
        pytest.param("a@x.example.org", ["example.org"], False, id="subdomain-unlisted"),
        pytest.param("a@x.example.org", ["*.example.org"], True, id="wildcard"),
        pytest.param("a@x.y.example.org", ["*.example.org"], True, id="wildcard-deeper"),
        pytest.param("a@example.org", ["*.example.org"], False, id="wildcard-not-itself"),
        pytest.param("a@badexample.org", ["*.example.org"], False, id="wildcard-label-bound"),
        pytest.param("a@example.org.evil", ["example.org"], False, id="suffix"),
        pytest.param("a@example.org", [], False, id="none-listed"),
    ],
)
def test_domain_rule(address: str, allowed: list[str], expected: bool) -> None:
    assert domain_allowed(address, allowed) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "web:\n  registration:\n    enabled: true\n",
            "enabled: true needs allowed_domains",
            id="no-domains",
        ),
        pytest.param(
            "web:\n  registration:\n    enabled: true\n    allowed_domains: [example.org]\n",
            "web.registration needs mail: set mail.host",
            id="no-mail",
        ),
        pytest.param(
            "web:\n  registration:\n    allowed_domains: ['@example.org']\n",
            "'@example.org' is not a mail domain",
            id="bad-domain",
        ),
    ],
)
def test_settings_refuse_what_cannot_work(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_text(text, "davbox.yaml")
    assert message in " ".join(str(p) for p in caught.value.problems)


def test_registration_is_off_by_default() -> None:
    settings = settings_from_text("", "davbox.yaml")
    assert settings.web.registration.enabled is False


@pytest.fixture
def registrations(tmp_path: Path) -> Iterator[Registrations]:
    db = Database(f"sqlite:///{tmp_path / 'r.db'}")
    db.upgrade()
    settings = RegistrationSettings(
        enabled=True,
        allowed_domains=["example.org"],
        requests_per_address=5,
        requests_per_client=2,
        link_lifetime=60,
        throttle_window=120,
    )
    yield Registrations(db, Outbox(db), settings, "https://files.example.org/")
    db.dispose()


def test_requests_per_client_address_are_throttled(registrations: Registrations) -> None:
    def ask(address: str, client: str) -> str:
        return registrations.request(
            address=address, display_name="", password=PASSWORD, client=client, language="en"
        )

    assert ask("a@example.org", "192.0.2.1") == "link"
    assert ask("b@example.org", "192.0.2.1") == "link"
    with pytest.raises(Throttled) as caught:
        ask("c@example.org", "192.0.2.1")
    assert 110 <= caught.value.retry_after <= 121
    assert ask("c@example.org", "192.0.2.2") == "link"  # another client may


def test_purge_drops_expired_hashes(registrations: Registrations) -> None:
    registrations.request(
        address="a@example.org", display_name="", password=PASSWORD, client="c", language="en"
    )
    assert [p.email for p in registrations.pending()] == ["a@example.org"]
    assert registrations.purge(time.time() + 61) == (1, 0)
    assert registrations.pending() == []
    with registrations.db.session() as session:
        row = session.execute(select(Registration)).scalar_one()
        assert (row.state, row.password_hash, row.digest) == ("expired", None, None)
    assert registrations.purge(time.time() + 121) == (0, 1)
