"""LDAP accounts against a real slapd and a real ``davbox serve``, over real HTTP.

One slapd serves the whole module (tests/slapd.py); each test uses its own
people or restores what it changes. Servers run with ``auth.cache_ttl: 0``
where a test needs every request to ask the directory again.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import select, update

from davbox import accounts
from davbox.config import ConfigError, settings_from_text
from davbox.config.schema import LdapProviderSettings
from davbox.db import Database
from davbox.db.models import Group, GroupMember, User
from davbox.passwords import hash_password
from davbox.providers.identity import ProviderUnavailable
from davbox.providers.identity.ldap import LdapIdentityProvider
from tests.davserver import PASSWORD, DavboxServer
from tests.slapd import GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, USERS, Slapd, person_dn
from tests.test_web_login import WebClient, assert_redirect

GROUP_MAP = {"finance": "fin", "HR": "personnel"}  # LDAP cn "hr": names compare without case


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    slapd = Slapd(tmp_path_factory.mktemp("slapd")).start()
    yield slapd
    slapd.stop()


def search_provider(directory: Slapd, **options: Any) -> dict[str, Any]:
    """Search-then-bind with the service account, groups mapped."""
    return {
        "type": "ldap",
        "url": directory.url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PASSWORD,
        "user_search_base": PEOPLE,
        "group_search_base": GROUPS,
        "group_map": GROUP_MAP,
        **options,
    }


def template_provider(directory: Slapd, **options: Any) -> dict[str, Any]:
    """Direct bind to uid={username},ou=people; no service account (groups read as the user)."""
    return {
        "type": "ldap",
        "url": directory.url,
        "user_dn_template": f"uid={{username}},{PEOPLE}",
        "group_search_base": GROUPS,
        "group_map": GROUP_MAP,
        **options,
    }


def ldap_server(make_server, tmp_path: Path, name: str, providers: list[Any], **auth: Any):
    config = tmp_path / f"{name}.yaml"
    auth.setdefault("two_factor_for", [])
    config.write_text(yaml.safe_dump({"auth": {"providers": providers, **auth}}))
    server = make_server(name, config=config)
    accounts.add_group(server.database(), "fin")
    accounts.add_group(server.database(), "personnel")
    server.mailbox("ledger", **{"@fin": "member"})
    return server


def propfind(server, path: str, auth: tuple[str, str], depth: str = "0") -> requests.Response:
    return requests.request(
        "PROPFIND", server.dav(path), headers={"Depth": depth}, auth=auth, timeout=30
    )


def mailboxes(server, auth: tuple[str, str]) -> set[str]:
    response = propfind(server, "", auth, depth="1")
    assert response.status_code == 207, response.text
    hrefs = re.findall(r"<(?:\w+:)?href>([^<]+)</(?:\w+:)?href>", response.text)
    return {href.rstrip("/").rsplit("/", 1)[-1] for href in hrefs} - {"dav", ""}


@pytest.fixture(scope="module")
def search_server(tmp_path_factory, directory) -> Iterator[DavboxServer]:
    """One server for tests that change nothing: search-then-bind, groups mapped."""
    root = tmp_path_factory.mktemp("search-server")
    config = root / "config.yaml"
    auth = {"providers": [search_provider(directory)], "two_factor_for": []}
    config.write_text(yaml.safe_dump({"auth": auth}))
    server = DavboxServer(root / "data", config=config).start()
    yield server
    server.stop()


def lena() -> tuple[str, str]:
    return "lena", USERS["lena"]


def test_ldap_user_sees_a_mailbox_through_a_mapped_group(make_server, tmp_path, directory):
    secret = tmp_path / "ldap.pass"
    secret.write_text(SERVICE_PASSWORD + "\n")
    provider = search_provider(directory, bind_password={"$file": str(secret)})
    server = ldap_server(make_server, tmp_path, "search", [{"type": "sql"}, provider])

    assert mailboxes(server, lena()) == {"ledger"}  # granted only to @fin, mapped from finance
    assert propfind(server, "ledger/", lena()).status_code == 207
    put = requests.put(server.dav("ledger/from-lena.txt"), data=b"x", auth=lena(), timeout=30)
    assert put.status_code == 201

    with server.database().session() as session:
        user = session.execute(select(User).where(User.name == "lena")).scalar_one()
        groups = {g.name for g in user.groups}
        names = set(session.execute(select(Group.name)).scalars())
        assert (user.source, user.password_hash) == ("ldap", None)
        assert (user.display_name, user.email) == ("Lena Tester", "lena@example.org")
    assert groups == {"fin", "personnel"}  # the mapped ones; "unmapped" is ignored
    assert "unmapped" not in names


@pytest.mark.parametrize(
    "username, password",
    [
        pytest.param("lena", "wrong-password", id="wrong-password"),
        pytest.param("nobody", USERS["lena"], id="unknown-user"),
        pytest.param("lena", "", id="empty-password"),
        # Unescaped, these filters would match lena alone and her password would work.
        pytest.param("len*", USERS["lena"], id="wildcard"),
        pytest.param("lena)(cn=Lena", USERS["lena"], id="filter-injection"),
        pytest.param("*", USERS["lena"], id="star"),
        pytest.param(")(uid=*", USERS["lena"], id="close-and-match-all"),
        pytest.param("lena\\2a", USERS["lena"], id="escaped-star"),
        pytest.param(" lena", USERS["lena"], id="leading-space"),
        pytest.param("lena\x00", USERS["lena"], id="nul"),
    ],
)
def test_refused_logins_get_401(search_server, username, password):
    server = search_server
    response = propfind(server, "", (username, password))
    assert response.status_code == 401
    assert "wrong user name or password" in response.text
    assert propfind(server, "", lena()).status_code == 207  # the directory is fine


def test_group_changes_in_the_directory_follow_at_the_next_login(make_server, tmp_path, directory):
    server = ldap_server(make_server, tmp_path, "groups", [search_provider(directory)], cache_ttl=0)
    server.mailbox("people-files", **{"@personnel": "reader"})
    lars = ("lars", USERS["lars"])
    assert mailboxes(server, lars) == {"ledger"}
    directory.modify(
        f"dn: cn=finance,{GROUPS}\nchangetype: modify\ndelete: member\n"
        f"member: {person_dn('lars')}\n\n"
        f"dn: cn=hr,{GROUPS}\nchangetype: modify\nadd: member\nmember: {person_dn('lars')}\n"
    )
    try:
        assert mailboxes(server, lars) == {"people-files"}
        assert propfind(server, "ledger/", lars).status_code == 404
    finally:
        directory.modify(
            f"dn: cn=finance,{GROUPS}\nchangetype: modify\nadd: member\n"
            f"member: {person_dn('lars')}\n\n"
            f"dn: cn=hr,{GROUPS}\nchangetype: modify\ndelete: member\n"
            f"member: {person_dn('lars')}\n"
        )
    assert mailboxes(server, lars) == {"ledger"}


def test_dn_template_mode(make_server, tmp_path, directory):
    server = ldap_server(make_server, tmp_path, "template", [template_provider(directory)])
    lotte = ("lotte", USERS["lotte"])
    assert mailboxes(server, lotte) == {"ledger"}
    assert propfind(server, "", ("lotte", "wrong-password")).status_code == 401
    assert propfind(server, "", ("nobody", USERS["lotte"])).status_code == 401
    assert propfind(server, "", ("lotte", "")).status_code == 401
    # Escaped as a DN value: these name no entry (and are no syntax errors either).
    for name in ("lotte,ou=people", "lotte+cn=Lotte", "*", "lotte\\"):
        assert propfind(server, "", (name, USERS["lotte"])).status_code == 401, name
    assert propfind(server, "", lotte).status_code == 207


def test_case_of_the_login_name_makes_no_second_account(make_server, tmp_path, directory):
    server = ldap_server(make_server, tmp_path, "case", [template_provider(directory)])
    assert propfind(server, "", ("LIEKE", USERS["lieke"])).status_code == 207
    assert propfind(server, "", ("lieke", USERS["lieke"])).status_code == 207
    with server.database().session() as session:
        names = list(session.execute(select(User.name).where(User.source == "ldap")).scalars())
    assert names == ["lieke"]  # named by the entry's uid, not by what was typed


def test_sql_and_ldap_accounts_on_one_server(make_server, tmp_path, directory):
    server = ldap_server(
        make_server, tmp_path, "chain", [{"type": "sql"}, search_provider(directory)]
    )
    server.add_user("sara")  # a local account
    server.mailbox("local-box", sara="member")
    assert mailboxes(server, ("sara", PASSWORD)) == {"local-box"}
    assert mailboxes(server, lena()) == {"ledger"}

    # A local account is never taken over by the directory's account of that name.
    server.add_user("luuk")
    assert propfind(server, "", ("luuk", USERS["luuk"])).status_code == 401
    assert propfind(server, "", ("luuk", PASSWORD)).status_code == 207
    assert "a local account of that name exists" in server.log_text(until="a local account of that")

    # An LDAP account has no local password: setting one is refused ...
    with pytest.raises(accounts.AdminError, match="comes from LDAP"):
        accounts.set_password(server.database(), "lena", "a-local-password-123")
    refused = server.cli(
        "user", "passwd", "lena", "--password-stdin", input="another-pw-1234\n", check=False
    )
    assert refused.returncode != 0 and "changed in the directory" in refused.stderr
    # ... and one written into the database anyway is never used.
    with server.database().session() as session:
        session.execute(
            update(User)
            .where(User.name == "lena")
            .values(password_hash=hash_password("a-local-password-123"))
        )
    assert propfind(server, "", ("lena", "a-local-password-123")).status_code == 401


def test_ldap_account_logs_in_on_the_web(make_server, tmp_path, directory):
    server = ldap_server(make_server, tmp_path, "web", [search_provider(directory)])
    browser = WebClient(server)
    assert_redirect(browser.log_in("lena", USERS["lena"]), "/account")
    assert "ledger" in browser.get("/account").text, "mapped group's mailbox shown"
    page = browser.get("/account/password")
    assert "managed by your organisation&#39;s directory" in page.text
    assert 'name="new"' not in page.text
    wrong = WebClient(server).log_in("lena", "not-her-password")
    assert wrong.status_code == 401


def test_two_factor_ldap_accounts_use_app_passwords(make_server, tmp_path, directory):
    server = ldap_server(
        make_server, tmp_path, "tfa", [search_provider(directory)], two_factor_for=["*"]
    )
    assert propfind(server, "", lena()).status_code == 401  # password alone opens nothing
    made = server.cli("app-password", "create", "lena", "--label", "laptop")
    password = re.search(r"\(shown once\): (\S+)", made.stdout).group(1)
    assert mailboxes(server, ("lena", password)) == {"ledger"}


def test_directory_down_gives_503_then_recovers(make_server, tmp_path, directory):
    server = ldap_server(
        make_server,
        tmp_path,
        "outage",
        [search_provider(directory), {"type": "sql"}],  # local accounts are asked second
        cache_ttl=0,
    )
    server.add_user("sara")
    luuk = ("luuk", USERS["luuk"])
    assert propfind(server, "", luuk).status_code == 207  # the pool holds a connection now
    directory.kill()
    try:
        for auth in (luuk, ("nobody", "whatever-password")):
            response = propfind(server, "", auth)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "30"
            assert "logging in is not possible right now" in response.text
        # Local accounts do not depend on the directory, even when it is asked first.
        assert propfind(server, "", ("sara", PASSWORD)).status_code == 207
        wanted = (
            rf"ERROR davbox\.auth: LDAP server {re.escape(directory.url)} unreachable: .*refused"
        )
        log = server.log_text(until=wanted)
        assert re.search(
            wanted,
            log,
        ), log
        assert log.count("unreachable") == 1  # once per outage, not per login
        assert "Traceback" not in log
    finally:
        directory.start()
    # The pooled connection died with slapd; a new one replaces it.
    assert propfind(server, "", luuk).status_code == 207
    assert f"LDAP server {directory.url} answers again" in server.log_text(until="answers again")


def test_a_directory_that_never_answers_times_out(make_server, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (in the kernel), never answers
    url = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
    try:
        server = ldap_server(
            make_server,
            tmp_path,
            "silent",
            [{"type": "ldap", "url": url, "user_dn_template": "uid={username},o=x", "timeout": 1}],
        )
        started = time.monotonic()
        response = propfind(server, "", ("lena", "a-password"))
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert elapsed < 4, elapsed
        assert f"LDAP server {url} unreachable" in server.log_text(
            until=f"LDAP server {re.escape(url)} unreachable"
        )
    finally:
        silent.close()


def test_start_tls_with_a_trusted_certificate(make_server, tmp_path, directory):
    provider = search_provider(directory, start_tls=True, ca_file=str(directory.cert))
    server = ldap_server(make_server, tmp_path, "starttls", [provider])
    assert mailboxes(server, lena()) == {"ledger"}


def test_start_tls_refuses_an_untrusted_certificate(make_server, tmp_path, directory):
    provider = search_provider(directory, start_tls=True)  # the system CAs do not know it
    server = ldap_server(make_server, tmp_path, "untrusted", [provider])
    response = propfind(server, "", lena())
    assert response.status_code == 503  # a configuration fault: nobody gets in, admins are told
    log = server.log_text(until="StartTLS failed")
    assert (
        f"ERROR davbox.auth: LDAP server {directory.url} unreachable: StartTLS failed:"
        " [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
    ) in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    "options, refusal",
    [
        pytest.param({"ca_file": "CERT"}, None, id="trusted"),
        pytest.param({}, "CERTIFICATE_VERIFY_FAILED", id="untrusted"),
        pytest.param({"verify_tls": False}, None, id="unverified"),
        pytest.param(
            {"ca_file": "CERT", "host": "localhost"},
            "Hostname mismatch, certificate is not valid for 'localhost'",
            id="wrong-name",
        ),
    ],
)
def test_ldaps(provider_for, directory, options, refusal):
    options = dict(options)
    if options.get("ca_file") == "CERT":
        options["ca_file"] = str(directory.cert)
    url = directory.ldaps_url.replace("127.0.0.1", options.pop("host", "127.0.0.1"))
    provider = provider_for(url=url, **options)
    if refusal is None:
        assert provider.verify("lena", USERS["lena"]) is not None
    else:
        with pytest.raises(ProviderUnavailable, match=re.escape(refusal)):
            provider.verify("lena", USERS["lena"])


def test_config_mistakes_are_named(tmp_path):
    def problems(provider: str) -> str:
        text = "auth:\n  providers:\n    - type: ldap\n      url: ldap://h\n" + provider
        with pytest.raises(ConfigError) as caught:
            settings_from_text(text, "c.yaml")
        return str(caught.value)

    assert problems("") == (
        "c.yaml:3: auth.providers[0]: set exactly one of user_search_base and user_dn_template"
    )
    assert problems("      user_search_base: o=x\n      user_filter: (uid={user})\n") == (
        "c.yaml:3: auth.providers[0]: user_filter: unknown placeholder {user} (known: {username})"
    )
    assert problems("      user_dn_template: o=x\n") == (
        "c.yaml:3: auth.providers[0]: user_dn_template must contain {username}"
    )
    assert problems("      user_search_base: o=x\n      grup_map: {}\n") == (
        "c.yaml:6: auth.providers[0].grup_map: unknown key 'grup_map' (did you mean 'group_map'?)"
    )
    assert problems("      user_search_base: o=x\n      bind_password: 5\n") == (
        "c.yaml:6: auth.providers[0].bind_password: input should be a valid string,"
        " got a value of another type"
    )
    assert problems(
        f"      user_search_base: o=x\n      bind_dn: {SERVICE_DN}\n      bind_password: ''\n"
    ) == ("c.yaml:3: auth.providers[0]: bind_password is empty")
    with pytest.raises(ConfigError, match=r"c\.yaml:3: auth\.providers\[0\]: each provider"):
        settings_from_text("auth:\n  providers:\n    - type: kerberos\n", "c.yaml")


# --- the provider in-process: what is hard to see from outside ----------------------


@pytest.fixture
def provider_for(tmp_path, directory) -> Iterator[Any]:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    db.upgrade()

    def make(**options: Any) -> LdapIdentityProvider:
        settings = LdapProviderSettings.model_validate(search_provider(directory, **options))
        made.append(LdapIdentityProvider(db, settings))
        return made[-1]

    made: list[LdapIdentityProvider] = []
    yield make
    for provider in made:
        provider.close()
    db.dispose()


def test_unknown_names_cost_a_bind_like_known_ones(provider_for, monkeypatch):
    provider = provider_for()
    binds: list[str] = []
    real_bind = provider._bind

    def counting_bind(dn: str, password: str):
        binds.append(dn)
        return real_bind(dn, password)

    monkeypatch.setattr(provider, "_bind", counting_bind)
    assert provider.verify("nobody", "some-password") is None
    assert provider.verify("lena", "wrong-password") is None
    assert len(binds) == 2
    assert binds[0].startswith("cn=davbox-nobody-") and binds[1] == person_dn("lena")


def test_service_connections_are_reused_and_bounded(provider_for):
    provider = provider_for(pool_size=2)
    opened: list[int] = []
    real_open = provider._open_service

    def counting_open():
        opened.append(1)
        return real_open()

    provider._open_service = counting_open  # type: ignore[method-assign]
    for _ in range(3):
        assert provider.verify("lodewijk", USERS["lodewijk"]) is not None
    assert len(opened) == 1  # one connection served all three logins

    threads = [
        threading.Thread(target=provider.verify, args=("lodewijk", USERS["lodewijk"]))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(opened) <= 2
    assert provider._idle.qsize() <= 2


@pytest.mark.parametrize("name", ["len*", "lena)(cn=Lena", "*", "lena)(|(uid=*"])
def test_names_are_escaped_in_filters(provider_for, name):
    # Unescaped, each filter matches lena alone, and her password would do.
    # (verify() already refuses such names; this is the second line of defence.)
    provider = provider_for()
    assert provider._check(name, USERS["lena"]) is None
    assert provider._check("lena", USERS["lena"]) is not None


def test_an_empty_password_is_never_sent(provider_for, monkeypatch):
    provider = provider_for()
    monkeypatch.setattr(provider, "_connect", lambda *a: pytest.fail("nothing may be sent"))
    assert provider.verify("lena", "") is None


def test_a_wrong_service_password_is_an_outage_not_a_wrong_password(provider_for, caplog):
    provider = provider_for(bind_password="not-the-service-password")
    with pytest.raises(ProviderUnavailable, match="refused the service account"):
        provider.verify("lena", USERS["lena"])
    assert "not-the-service-password" not in caplog.text
    assert USERS["lena"] not in caplog.text


def test_group_sync_adds_and_removes_only_mapped_groups(provider_for, tmp_path):
    provider = provider_for()
    db = provider.db
    accounts.add_group(db, "manual")
    identity = provider.verify("lena", USERS["lena"])
    assert identity is not None
    accounts.change_group_members(db, "manual", ["lena"], [])
    accounts.change_group_members(db, "personnel", [], ["lena"])  # the directory says hr
    epoch = db.current_epoch()
    provider.verify("lena", USERS["lena"])
    with db.session() as session:
        groups = set(
            session.execute(
                select(Group.name)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .where(GroupMember.user_id == identity.user_id)
            ).scalars()
        )
    assert groups == {"fin", "personnel", "manual"}  # restored, and "manual" left alone
    assert db.current_epoch() != epoch  # caches everywhere refresh
    epoch = db.current_epoch()
    provider.verify("lena", USERS["lena"])
    assert db.current_epoch() == epoch  # nothing changed: no refresh


def test_passwords_are_not_in_the_database(make_server, tmp_path, directory):
    server = ldap_server(make_server, tmp_path, "nopw", [search_provider(directory)])
    assert propfind(server, "", lena()).status_code == 207
    server.stop()
    con = sqlite3.connect(server.data_dir / "davbox.db")
    hashes = list(con.execute("SELECT password_hash FROM users WHERE source = 'ldap'"))
    con.close()
    assert hashes == [(None,)]
    assert USERS["lena"].encode() not in (server.data_dir / "davbox.db").read_bytes()
