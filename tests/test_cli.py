"""The admin CLI: scriptable, no prompts, one-line errors for bad names, duplicates and roles."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.davserver import PASSWORD


def davbox(data_dir, *args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "davbox", "--data-dir", str(data_dir), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def data(tmp_path):
    return tmp_path / "data"


def test_account_lifecycle(data):
    assert (
        davbox(data, "user", "add", "alice", "--password-stdin", input=PASSWORD + "\n").returncode
        == 0
    )
    generated = davbox(data, "user", "add", "bob")
    assert generated.returncode == 0
    assert "password (shown once): " in generated.stdout
    assert davbox(data, "group", "add", "team").returncode == 0
    members = davbox(data, "group", "members", "team", "--add", "alice", "--add", "bob")
    assert members.stdout.split() == ["alice", "bob"]
    assert davbox(data, "mailbox", "create", "extern").returncode == 0
    assert davbox(data, "mailbox", "grant", "extern", "alice", "manager").returncode == 0
    assert davbox(data, "mailbox", "grant", "extern", "@team", "reader").returncode == 0
    listing = davbox(data, "mailbox", "list").stdout
    assert "extern\t@team=reader, alice=manager" in listing
    assert davbox(data, "user", "disable", "bob").returncode == 0
    users = davbox(data, "user", "list").stdout
    assert "bob\tdisabled\tgroups=team" in users
    assert "alice\tactive\tgroups=team" in users
    assert davbox(data, "user", "enable", "bob").returncode == 0
    assert (
        davbox(
            data, "user", "passwd", "bob", "--password-stdin", input="another-long-secret\n"
        ).returncode
        == 0
    )
    assert davbox(data, "mailbox", "revoke", "extern", "@team").returncode == 0
    assert davbox(data, "group", "members", "team", "--remove", "bob").stdout.split() == ["alice"]
    assert davbox(data, "group", "remove", "team").returncode == 0
    assert davbox(data, "user", "remove", "bob").returncode == 0
    assert davbox(data, "mailbox", "remove", "extern", "--yes").returncode == 0
    assert "extern" not in davbox(data, "mailbox", "list").stdout


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        pytest.param(
            [],
            ["user", "passwd", "nobody", "--password-stdin"],
            "no user named 'nobody'",
            id="unknown-user",
        ),
        pytest.param(
            [["user", "add", "carol"]],
            ["user", "add", "carol"],
            "a user named 'carol' already exists",
            id="duplicate-user",
        ),
        pytest.param(
            [],
            ["user", "add", "bad name!"],
            "invalid user name 'bad name!': use letters, digits and . _ - @, at most 128"
            " characters, not ending in a dot or space",
            id="bad-user-name",
        ),
        pytest.param(
            [],
            ["mailbox", "grant", "nobox", "carol", "member"],
            "no mailbox named 'nobox'",
            id="unknown-mailbox",
        ),
        pytest.param(
            [["mailbox", "create", "box"]],
            ["mailbox", "create", "box"],
            "a mailbox named 'box' already exists",
            id="duplicate-mailbox",
        ),
        pytest.param(
            [["mailbox", "create", "box"], ["user", "add", "carol"]],
            ["mailbox", "grant", "box", "carol", "owner"],
            "unknown role 'owner': choose one of manager, member, reader, dropper",
            id="bad-role",
        ),
        pytest.param(
            [["mailbox", "create", "box"]],
            ["mailbox", "grant", "box", "@ghosts", "reader"],
            "no group named 'ghosts'",
            id="unknown-group",
        ),
        pytest.param(
            [["mailbox", "create", "box"], ["user", "add", "carol"]],
            ["mailbox", "revoke", "box", "carol"],
            "'carol' has no role in mailbox 'box'",
            id="revoke-nothing",
        ),
        pytest.param(
            [],
            ["user", "add", "dave", "--password-stdin"],
            "passwords must have at least 10 characters",
            id="weak-password",
        ),
    ],
)
def test_clear_errors(data, setup, args, message):
    for step in setup:
        assert davbox(data, *step).returncode == 0
    stdin = None
    if "--password-stdin" in args:
        stdin = "short\n" if "weak" in message or "10 characters" in message else PASSWORD + "\n"
    result = davbox(data, *args, input=stdin)
    assert result.returncode == 1
    assert result.stderr.strip() == f"davbox: error: {message}"
    assert "Traceback" not in result.stderr


def test_self_signed_certificate(data, tmp_path):
    from cryptography import x509

    result = davbox(
        data, "cert", "--self-signed", "--host", "files.example.org", "--host", "127.0.0.1"
    )
    assert result.returncode == 0, result.stderr
    cert = x509.load_pem_x509_certificate((data / "tls" / "cert.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "files.example.org" in names.get_values_for_type(x509.DNSName)
    assert (data / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600


def test_db_upgrade_is_idempotent(data):
    assert davbox(data, "db", "upgrade").returncode == 0
    assert davbox(data, "db", "upgrade").stdout.strip() == "database is up to date"
