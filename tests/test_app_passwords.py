"""App passwords over WebDAV: they work, can be limited and revoked, and are stored as HMACs."""

from __future__ import annotations

import re
import sqlite3
import time

import requests

from davbox import app_passwords

APP = re.compile(r"\(shown once\): (\S+)")


def propfind(server, path, auth):
    return requests.request(
        "PROPFIND", server.dav(path), headers={"Depth": "0"}, auth=auth, timeout=10
    ).status_code


def test_app_password_lifecycle_over_webdav(make_server):
    server = make_server("apps")
    server.add_user("ann")
    server.mailbox("one", ann="member")
    server.mailbox("two", ann="member")
    made = server.cli("app-password", "create", "ann", "--label", "laptop")
    password = APP.search(made.stdout).group(1)
    assert app_passwords.PATTERN.match(password)
    auth = ("ann", password)
    assert propfind(server, "one/", auth) == 207
    assert (
        requests.put(server.dav("one/a.txt"), data=b"a", auth=auth, timeout=10).status_code == 201
    )

    listing = server.cli("app-password", "list", "ann").stdout
    assert "ann\tlaptop\tall mailboxes\tlast used" in listing and "from 127.0.0.1" in listing

    # Stored only as an HMAC: the password appears nowhere in the database file.
    con = sqlite3.connect(server.data_dir / "davbox.db")
    digests = [row[0] for row in con.execute("SELECT digest FROM app_passwords")]
    con.close()
    assert password not in digests and len(digests[0]) == 64
    assert password.encode() not in (server.data_dir / "davbox.db").read_bytes()

    server.cli("app-password", "revoke", "ann", "laptop")
    deadline = time.monotonic() + 3
    while propfind(server, "one/", auth) != 401:
        assert time.monotonic() < deadline, "a revoked app password must stop working"
        time.sleep(0.2)


def test_limited_app_passwords(make_server):
    server = make_server("limited")
    server.add_user("ben")
    server.mailbox("one", ben="member")
    server.mailbox("two", ben="member")
    made = server.cli(
        "app-password", "create", "ben", "--label", "scanner", "--mailbox", "one", "--read-only"
    )
    auth = ("ben", APP.search(made.stdout).group(1))
    assert propfind(server, "one/", auth) == 207
    assert propfind(server, "two/", auth) == 404  # outside its scope: does not exist for it
    put = requests.put(server.dav("one/x.txt"), data=b"x", auth=auth, timeout=10)
    assert put.status_code == 403
    assert "this app password may only read" in put.text


def test_app_password_only_works_for_its_own_account(make_server):
    server = make_server("own")
    server.add_user("cat")
    server.add_user("dan")
    server.mailbox("one", cat="member", dan="member")
    made = server.cli("app-password", "create", "cat", "--label", "phone")
    password = APP.search(made.stdout).group(1)
    assert propfind(server, "one/", ("dan", password)) == 401
    assert propfind(server, "one/", ("cat", password)) == 207
