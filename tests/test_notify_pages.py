"""The notification settings page on a real server, with a real SMTP server (aiosmtpd).

- A member who picks "new file placed: immediately" on ``/account/notifications``
  is mailed when someone else uploads, within the sink's refresh; picking
  "off" stops that. Mails (immediate and digest) end with the page's address.
- A dropper is not offered "placed", and a hand-made POST asking for it is
  refused by the server (400, nothing saved); "fetched" works for them.
- Saving needs the session's CSRF token and a full login.
- Only the logged-in account's settings change: naming a mailbox without a
  role (existing or not) is refused with one message, and others'
  subscriptions stay as they were.
- The page speaks Dutch; an account without a mail address is told an
  administrator must set one and cannot switch notices on.
- Every change is one ``subscription-changed`` audit record; saving nothing new
  records nothing.

One server and one SMTP server for the module; each test has its own accounts
and mailboxes, and looks only at mail to its own accounts' addresses.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from davbox import accounts
from davbox.audit import AuditStore
from davbox.notify import subscriptions as notify
from tests.davserver import PASSWORD, DavboxServer
from tests.smtpd import Received, SmtpServer
from tests.test_notify import CONFIG, REFRESH, put
from tests.test_web_login import EXPIRED_FORM, WebClient, assert_redirect

PAGE = "/account/notifications"
SAVED = "Your notification settings were saved."
NO_ADDRESS = "You have no mail address for notifications yet: an administrator must set one."


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[DavboxServer]:
    base: Path = tmp_path_factory.mktemp("notify-pages")
    config = base / "davbox.yaml"
    srv = DavboxServer(base / "data", config=config)
    config.write_text(CONFIG.format(port=srv.port, smtp_port=smtp.port))
    srv.start()
    yield srv
    srv.stop()


def person(server: DavboxServer, name: str, *, email: bool = True) -> str:
    accounts.add_user(
        server.database(), name, PASSWORD, email=f"{name}@example.org" if email else None
    )
    return name


def logged_in(server: DavboxServer, name: str) -> WebClient:
    client = WebClient(server)
    assert_redirect(client.log_in(name), "/account")
    return client


def mails_to(smtp: SmtpServer, name: str) -> list[Received]:
    with smtp.lock:
        return [m for m in smtp.messages if m.envelope_to == [f"{name}@example.org"]]


def wait_for_mail(smtp: SmtpServer, name: str, count: int, timeout: float = 20) -> list[Received]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(found := mails_to(smtp, name)) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{len(mails_to(smtp, name))} of {count} mails to {name} arrived")


def subscriptions(server: DavboxServer, user: str) -> list[str]:
    """The account's subscriptions in the server's database: "mailbox event every"."""
    rows = notify.list_subscriptions(server.database(), user)
    return [f"{row.mailbox} {row.event} {row.every}" for row in rows]


def selected(html: str, field: str) -> str | None:
    """The chosen option of the select named ``field`` (None: no such select)."""
    found = re.search(rf'<select name="{re.escape(field)}"[^>]*>(.*?)</select>', html, re.S)
    if found is None:
        return None
    choice = re.search(r'<option value="([^"]*)" selected>', found.group(1))
    return choice.group(1) if choice else None


def audit_records(server: DavboxServer, actor: str) -> list[dict[str, Any]]:
    store = AuditStore(server.database())
    return list(store.query(actor=actor, kinds=("subscription-changed",)))


def test_member_subscribes_on_the_page_and_is_mailed_of_uploads(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    alice, bob = person(server, "alice"), person(server, "bob")
    server.mailbox("inbox-a", alice="member", bob="member")
    client = logged_in(server, alice)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert selected(page.text, "placed:inbox-a") == "off"
    assert selected(page.text, "fetched:inbox-a") == "off"
    assert "alice@example.org" in page.text
    assert "Only an administrator can change this address." in page.text

    saved = client.post(
        PAGE,
        {"csrf": client.csrf, "placed:inbox-a": "immediate", "language": "en"},
    )
    assert saved.status_code == 200 and SAVED in saved.text
    assert selected(saved.text, "placed:inbox-a") == "immediate"
    assert subscriptions(server, alice) == ["inbox-a placed immediate"]

    time.sleep(REFRESH)
    put(server, bob, "inbox-a/offerte.pdf")
    (mail,) = wait_for_mail(smtp, alice, 1)
    assert mail.subject == "New file in mailbox inbox-a: offerte.pdf"  # the language chosen
    assert f"Change or turn off notifications: {server.url}{PAGE}" in mail.text

    # Off again: the next upload mails nobody.
    off = client.post(PAGE, {"csrf": client.csrf, "placed:inbox-a": "off"})
    assert off.status_code == 200 and subscriptions(server, alice) == []
    time.sleep(REFRESH)
    put(server, bob, "inbox-a/second.pdf")
    time.sleep(1.5)
    assert len(mails_to(smtp, alice)) == 1


def test_digest_chosen_on_the_page_carries_the_settings_address(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    gina, hank = person(server, "gina"), person(server, "hank")
    server.mailbox("inbox-g", gina="reader", hank="member")
    client = logged_in(server, gina)
    client.get(PAGE)
    saved = client.post(PAGE, {"csrf": client.csrf, "placed:inbox-g": "hourly"})
    assert saved.status_code == 200
    time.sleep(REFRESH)
    put(server, hank, "inbox-g/notes.txt")
    time.sleep(1)
    assert mails_to(smtp, gina) == [], "a digest subscriber gets no immediate mail"
    server.cli("notify", "digest", "--now")
    (digest,) = wait_for_mail(smtp, gina, 1)
    assert f"Meldingen wijzigen of uitzetten: {server.url}{PAGE}" in digest.text


def test_dropper_is_not_offered_placed_and_the_server_refuses_it(server: DavboxServer) -> None:
    dora = person(server, "dora")
    server.mailbox("inbox-d", dora="dropper")
    client = logged_in(server, dora)
    page = client.get(PAGE)
    assert selected(page.text, "placed:inbox-d") is None  # no such choice
    assert 'name="placed:inbox-d"' not in page.text
    assert selected(page.text, "fetched:inbox-d") == "off"

    forged = client.post(PAGE, {"csrf": client.csrf, "placed:inbox-d": "immediate"})
    assert forged.status_code == 400
    assert (
        "You may only drop files in mailbox inbox-d, so you cannot be told about new files there."
        in forged.text
    )
    assert subscriptions(server, dora) == []
    # One refused part refuses the whole form.
    mixed = client.post(
        PAGE,
        {"csrf": client.csrf, "fetched:inbox-d": "daily", "placed:inbox-d": "daily"},
    )
    assert mixed.status_code == 400 and subscriptions(server, dora) == []

    fetched = client.post(PAGE, {"csrf": client.csrf, "fetched:inbox-d": "daily"})
    assert fetched.status_code == 200 and SAVED in fetched.text
    assert subscriptions(server, dora) == ["inbox-d fetched daily"]
    assert client.post(PAGE, {"csrf": client.csrf, "placed:inbox-d": "off"}).status_code == 200


def test_saving_needs_the_csrf_token_and_a_login(server: DavboxServer) -> None:
    ivan = person(server, "ivan")
    server.mailbox("inbox-i", ivan="member")
    client = logged_in(server, ivan)
    client.get(PAGE)
    for fields in (
        {"placed:inbox-i": "immediate"},
        {"csrf": "not-the-token", "placed:inbox-i": "immediate"},
    ):
        refused = client.post(PAGE, fields)
        assert refused.status_code == 400 and EXPIRED_FORM in refused.text
    assert subscriptions(server, ivan) == []

    stranger = WebClient(server)
    assert_redirect(stranger.get(PAGE), "/login")
    assert_redirect(stranger.post(PAGE, {"placed:inbox-i": "immediate"}), "/login")
    assert subscriptions(server, ivan) == []


def test_only_the_own_account_changes(server: DavboxServer) -> None:
    carl, erin = person(server, "carl"), person(server, "erin")
    server.mailbox("shared-c", carl="member", erin="member")
    server.mailbox("private-e", erin="manager")
    notify.subscribe(server.database(), erin, "shared-c", "placed", "daily")
    notify.subscribe(server.database(), erin, "private-e", "fetched", "immediate")
    erins = subscriptions(server, erin)
    client = logged_in(server, carl)
    page = client.get(PAGE)
    assert "private-e" not in page.text  # only mailboxes carl has a role in

    saved = client.post(
        PAGE,
        {"csrf": client.csrf, "placed:shared-c": "immediate", "user": erin, "username": erin},
    )
    assert saved.status_code == 200
    assert subscriptions(server, carl) == ["shared-c placed immediate"]
    assert subscriptions(server, erin) == erins

    # A mailbox without a role, or none at all: the same refusal, nothing saved.
    for mailbox in ("private-e", "no-such-box"):
        refused = client.post(
            PAGE,
            {"csrf": client.csrf, "placed:shared-c": "off", f"fetched:{mailbox}": "off"},
        )
        assert refused.status_code == 400
        assert f"You have no mailbox {mailbox}." in refused.text
    assert subscriptions(server, carl) == ["shared-c placed immediate"]
    assert subscriptions(server, erin) == erins

    unknown = client.post(PAGE, {"csrf": client.csrf, "placed:shared-c": "weekly"})
    assert unknown.status_code == 400
    assert "That choice is not one this page offers." in unknown.text


def test_page_in_dutch(server: DavboxServer) -> None:
    fenna = person(server, "fenna")
    server.mailbox("inbox-f", fenna="member")
    client = logged_in(server, fenna)
    page = client.get(PAGE + "?lang=nl")
    assert page.status_code == 200
    for text in (
        "<h1>Meldingen</h1>",
        "Nieuw bestand geplaatst",
        "Een bestand dat ik plaatste is opgehaald",
        ">direct</option>",
        ">overzicht per uur</option>",
        ">dagelijks overzicht</option>",
        "Taal van de mails",
        "Alleen een beheerder kan dit adres wijzigen.",
    ):
        assert text in page.text, text
    saved = client.post(
        PAGE, {"csrf": client.csrf, "fetched:inbox-f": "immediate", "language": "nl"}
    )
    assert "Uw instellingen voor meldingen zijn opgeslagen." in saved.text
    account = client.get("/account")
    assert '<a href="/account/notifications"' in account.text


def test_without_an_address_an_administrator_must_set_one(server: DavboxServer) -> None:
    nico = person(server, "nico", email=False)
    server.mailbox("inbox-n", nico="member")
    client = logged_in(server, nico)
    page = client.get(PAGE)
    assert NO_ADDRESS in page.text
    assert re.search(r'<select name="placed:inbox-n"[^>]* disabled>', page.text)
    refused = client.post(PAGE, {"csrf": client.csrf, "placed:inbox-n": "immediate"})
    assert refused.status_code == 400 and NO_ADDRESS in refused.text
    assert subscriptions(server, nico) == []
    language = client.post(PAGE, {"csrf": client.csrf, "language": "en"})
    assert language.status_code == 200 and 'value="en" selected' in language.text
    # The page offers no way to set an address.
    assert 'name="email"' not in page.text and 'name="address"' not in page.text


def test_each_change_is_an_audit_record(server: DavboxServer) -> None:
    olga = person(server, "olga")
    server.mailbox("inbox-o", olga="manager")
    client = logged_in(server, olga)
    client.get(PAGE)
    fields = {
        "csrf": client.csrf,
        "placed:inbox-o": "daily",
        "fetched:inbox-o": "immediate",
        "language": "nl",
    }
    assert client.post(PAGE, fields).status_code == 200
    records = audit_records(server, olga)
    assert sorted(
        (r["mailbox"], r["setting"], r["before"], r["after"], r["actor_kind"], r["status"])
        for r in records
    ) == [
        ("", "language", "", "nl", "user", 200),
        ("inbox-o", "fetched", "off", "immediate", "user", 200),
        ("inbox-o", "placed", "off", "daily", "user", 200),
    ]
    assert client.post(PAGE, fields).status_code == 200  # nothing new: nothing recorded
    assert len(audit_records(server, olga)) == 3
    fields["placed:inbox-o"] = "off"
    assert client.post(PAGE, fields).status_code == 200
    last = audit_records(server, olga)[-1]
    assert (last["setting"], last["before"], last["after"]) == ("placed", "daily", "off")
    assert server.cli("audit", "verify").returncode == 0
