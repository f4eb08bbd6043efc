"""Two-factor login: TOTP codes once only, recovery codes once only, WebDAV needs app passwords."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
import requests

from davbox import accounts, app_passwords, twofactor
from davbox.db import Database
from tests.davserver import PASSWORD


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'tf.db'}")
    database.upgrade()
    accounts.add_user(database, "eve", PASSWORD)
    yield database
    database.dispose()


def secret_of(uri: str) -> str:
    return re.search(r"secret=([A-Z2-7]+)", uri).group(1)


def test_a_code_is_accepted_once(db):
    enrollment = twofactor.enroll(db, "eve")
    totp = pyotp.TOTP(secret_of(enrollment.uri))
    now = time.time()
    code = totp.at(now)
    assert twofactor.verify_code(db, "eve", code, now=now)
    assert not twofactor.verify_code(db, "eve", code, now=now), "a replayed code is refused"
    later = now + totp.interval
    assert twofactor.verify_code(db, "eve", totp.at(later), now=later)


def test_clock_drift_of_one_step_is_tolerated_but_not_two(db):
    enrollment = twofactor.enroll(db, "eve")
    totp = pyotp.TOTP(secret_of(enrollment.uri))
    now = time.time()
    assert twofactor.verify_code(db, "eve", totp.at(now - totp.interval), now=now)
    assert not twofactor.verify_code(db, "eve", totp.at(now - 3 * totp.interval), now=now + 60)
    assert not twofactor.verify_code(db, "eve", "12345", now=now)
    assert not twofactor.verify_code(db, "eve", "abcdef", now=now)


def test_an_older_code_is_refused_after_a_newer_one(db):
    enrollment = twofactor.enroll(db, "eve")
    totp = pyotp.TOTP(secret_of(enrollment.uri))
    now = time.time()
    assert twofactor.verify_code(db, "eve", totp.at(now + totp.interval), now=now)
    assert not twofactor.verify_code(db, "eve", totp.at(now), now=now)


def test_recovery_codes_work_once_and_are_stored_hashed(db, tmp_path):
    enrollment = twofactor.enroll(db, "eve")
    assert len(enrollment.recovery_codes) == 10
    code = enrollment.recovery_codes[0]
    assert twofactor.use_recovery_code(db, "eve", code)
    assert not twofactor.use_recovery_code(db, "eve", code), "a recovery code works once"
    assert not twofactor.use_recovery_code(db, "eve", "aaaaa-aaaaa")
    raw = (tmp_path / "tf.db").read_bytes()
    for other in enrollment.recovery_codes:
        assert other.encode() not in raw
    assert secret_of(enrollment.uri).encode() not in raw, "the TOTP secret is stored encrypted"


def test_reset_removes_the_second_factor(db):
    enrollment = twofactor.enroll(db, "eve")
    twofactor.reset(db, "eve")
    assert not twofactor.is_enrolled(db, "eve")
    assert not twofactor.use_recovery_code(db, "eve", enrollment.recovery_codes[1])


def test_who_must_use_two_factor(db):
    accounts.add_group(db, "legal")
    accounts.create_mailbox(db, "confidential")
    accounts.grant(db, "confidential", "@legal", "member")
    eve = 1
    assert twofactor.required_for(db, "eve", eve, frozenset(), ["*"])
    assert not twofactor.required_for(db, "eve", eve, frozenset(), [])
    assert twofactor.required_for(db, "eve", eve, frozenset({"legal"}), ["@legal"])
    assert twofactor.required_for(db, "eve", eve, frozenset({"legal"}), ["mailbox:confidential"])
    assert not twofactor.required_for(db, "eve", eve, frozenset(), ["mailbox:confidential"])
    assert twofactor.required_for(db, "eve", eve, frozenset(), ["eve"])


def test_webdav_refuses_the_account_password_under_two_factor(make_server, tmp_path):
    config = tmp_path / "2fa.yaml"
    config.write_text('auth:\n  two_factor_for: ["*"]\n')
    server = make_server("twofactor", config=config)
    server.add_user("fay")
    server.mailbox("f", fay="member")
    url = server.dav("f/")

    refused = requests.request(
        "PROPFIND", url, headers={"Depth": "0"}, auth=("fay", PASSWORD), timeout=10
    )
    assert refused.status_code == 401
    assert "app password" in refused.text
    wrong = requests.request(
        "PROPFIND", url, headers={"Depth": "0"}, auth=("fay", "not-her-password"), timeout=10
    )
    assert wrong.status_code == 401
    assert wrong.text == refused.text, "a correct password must not be confirmed"

    password = app_passwords.create(server.database(), "fay", "laptop")
    allowed = requests.request(
        "PROPFIND", url, headers={"Depth": "0"}, auth=("fay", password), timeout=10
    )
    assert allowed.status_code == 207
    app_passwords.revoke(server.database(), "fay", "laptop")
    deadline = time.monotonic() + 3
    while (
        requests.request(
            "PROPFIND", url, headers={"Depth": "0"}, auth=("fay", password), timeout=10
        ).status_code
        != 401
    ):
        assert time.monotonic() < deadline, "a revoked app password must stop working"
        time.sleep(0.2)
    # The first-start admin app password works, the admin password does not.
    assert server.admin_app_password
    root = server.dav("")
    assert (
        requests.request(
            "PROPFIND",
            root,
            headers={"Depth": "0"},
            auth=("admin", server.admin_app_password),
            timeout=10,
        ).status_code
        == 207
    )
    assert (
        requests.request(
            "PROPFIND",
            root,
            headers={"Depth": "0"},
            auth=("admin", server.admin_password),
            timeout=10,
        ).status_code
        == 401
    )


def test_cli_enroll_and_reset(tmp_path):
    import subprocess
    import sys

    def davbox(*args, input=None):
        return subprocess.run(
            [sys.executable, "-m", "davbox", "--data-dir", str(tmp_path / "d"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=input,
        )

    assert davbox("user", "add", "gus", "--password-stdin", input=PASSWORD + "\n").returncode == 0
    enrolled = davbox("2fa", "enroll", "gus")
    assert enrolled.returncode == 0, enrolled.stderr
    uri = re.search(r"otpauth://totp/\S+", enrolled.stdout).group(0)
    assert "issuer=davbox" in uri and "gus" in uri
    assert "█" in enrolled.stdout or "▀" in enrolled.stdout or "▄" in enrolled.stdout
    codes = re.findall(r"^  ([a-z2-9]{5}-[a-z2-9]{5})$", enrolled.stdout, re.MULTILINE)
    assert len(codes) == 10
    database = Database(f"sqlite:///{tmp_path / 'd' / 'davbox.db'}")
    totp = pyotp.TOTP(secret_of(uri))
    assert twofactor.verify_code(database, "gus", totp.now())
    assert davbox("2fa", "reset", "gus").returncode == 0
    assert not twofactor.is_enrolled(database, "gus")
    database.dispose()
    missing = davbox("2fa", "enroll", "nobody")
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr


def test_twofactor_policy_guards_a_mailbox_from_password_only_logins(make_server, tmp_path):
    config = tmp_path / "guard.yaml"
    config.write_text(
        "auth:\n"
        "  two_factor_for: []\n"
        "policies:\n"
        "  - name: confidential-needs-2fa\n"
        "    type: twofactor\n"
        '    mailboxes: ["vertrouwelijk"]\n'
    )
    server = make_server("guard", config=config)
    server.add_user("hugo")
    server.mailbox("gewoon", hugo="member")
    server.mailbox("vertrouwelijk", hugo="member")

    def propfind(box: str, password: str) -> requests.Response:
        return requests.request(
            "PROPFIND",
            server.dav(box + "/"),
            headers={"Depth": "1"},
            auth=("hugo", password),
            timeout=10,
        )

    assert propfind("gewoon", PASSWORD).status_code == 207, "an unguarded mailbox: password ok"
    refused = propfind("vertrouwelijk", PASSWORD)
    assert refused.status_code == 403
    assert "needs two-factor login" in refused.text
    put = requests.put(
        server.dav("vertrouwelijk/a.txt"), data=b"x", auth=("hugo", PASSWORD), timeout=10
    )
    assert put.status_code == 403
    app_password = app_passwords.create(server.database(), "hugo", "laptop")
    assert propfind("vertrouwelijk", app_password).status_code == 207, "a second factor passes"
