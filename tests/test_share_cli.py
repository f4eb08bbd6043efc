"""``davbox share create|list|revoke`` against the data directory of a running server.

What an administrator sees: the printed ``link:`` and ``webdav:`` URLs (which
work as printed: ``server.public_url`` is set), a token of 192 bits, the list
with each link's state, revoking, and refusals as one line on stderr with exit
status 1 and no traceback (unknown mailbox or path, drop links to files, the
share right of ``--as``, a ``links`` policy, unreadable times). The database
holds the token's SHA-256 digest, never the token, and an argon2 hash of the
link password.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import select, update

from davbox.db.models import ShareLink
from tests.davserver import PASSWORD, DavboxServer

CONFIG = """
server:
  public_url: http://127.0.0.1:{port}
policies:
  - name: strict-links
    type: links
    mailboxes: ["strict"]
    require_password: true
    max_expiry: 14d
"""
LINK_PASSWORD = "a-link-password-for-tests"
CREATED = re.compile(
    r"\Acreated (?P<permission>\w+) link (?P<id>\d+) to (?P<target>\S+)\n"
    r"link: (?P<url>(?P<base>\S+)/s/(?P<token>\S+))\n"
    r"webdav: (?P<webdav>\S+)\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    base = tmp_path_factory.mktemp("sharecli")
    config = base / "davbox.yaml"
    srv = DavboxServer(base / "data", config=config)
    config.write_text(CONFIG.format(port=srv.port))
    srv.start()
    for name in ("boss", "mem", "eve"):
        srv.add_user(name)
    srv.mailbox("box", boss="manager", mem="member", eve="dropper")
    srv.mailbox("strict", boss="manager")
    for folder in ("box/docs", "strict/out"):
        made = requests.request("MKCOL", srv.dav(folder), auth=("boss", PASSWORD), timeout=10)
        assert made.status_code == 201
    put = requests.put(srv.dav("box/docs/a.txt"), data=b"a", auth=("boss", PASSWORD), timeout=10)
    assert put.status_code == 201
    yield srv
    srv.stop()


def create(server: DavboxServer, *args: str, password: str | None = None) -> re.Match[str]:
    extra = ["--password-stdin"] if password is not None else []
    result = server.cli(
        "share", "create", *args, *extra, input=f"{password}\n" if password is not None else None
    )
    created = CREATED.match(result.stdout)
    assert created, result.stdout
    return created


def refused(server: DavboxServer, *args: str, password: str | None = None) -> str:
    """The one-line error of a refused command (exit status 1, no traceback)."""
    result = server.cli(*args, input=f"{password}\n" if password is not None else None, check=False)
    assert result.returncode == 1, (args, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("davbox: error: "), result.stderr
    return lines[0].removeprefix("davbox: error: ")


def states(server: DavboxServer, mailbox: str) -> dict[int, list[str]]:
    listing = server.cli("share", "list", "--mailbox", mailbox).stdout
    return {int(line.split("\t")[0]): line.split("\t") for line in listing.splitlines()}


def test_create_prints_urls_that_work_with_a_192_bit_token(server):
    created = create(server, "box/docs", "--permission", "read", "--label", "Docs")
    assert created["permission"] == "read" and created["target"] == "box/docs"
    assert created["base"] == server.url
    token = created["token"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token), "32 URL-safe characters: 192 bits"
    assert created["webdav"] == created["url"] + "/dav/"
    assert requests.get(created["url"], timeout=10).status_code == 200
    found = requests.request("PROPFIND", created["webdav"], headers={"Depth": "1"}, timeout=10)
    assert found.status_code == 207 and f"/s/{token}/dav/a.txt" in found.text
    tokens = {create(server, "box/docs", "--permission", "read")["token"] for _ in range(3)}
    assert len(tokens | {token}) == 4


def test_list_shows_target_permission_and_state(server):
    active = create(server, "box/docs", "--permission", "drop", "--label", "in")
    revoked = create(server, "box/docs", "--permission", "read")
    expired = create(server, "box/docs", "--permission", "read", "--expires", "5d")
    exhausted = create(server, "box/docs", "--permission", "read", "--max-downloads", "1")
    assert requests.get(exhausted["webdav"] + "a.txt", timeout=10).content == b"a"
    with server.database().session() as session:
        session.execute(
            update(ShareLink)
            .where(ShareLink.id == int(expired["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    revoke = server.cli("share", "revoke", revoked["id"])
    assert revoke.stdout == f"revoked link {revoked['id']} to box/docs\n"
    listed = states(server, "box")
    expected = {
        active: ("drop", "active"),
        revoked: ("read", "revoked"),
        expired: ("read", "expired"),
        exhausted: ("read", "exhausted"),
    }
    for created, (permission, state) in expected.items():
        row = listed[int(created["id"])]
        assert row[1:4] == ["box/docs", permission, state], row
        assert row[-1] == created["url"]
    assert listed[int(active["id"])][6] == "in"
    assert "downloads 1/1" in listed[int(exhausted["id"])][5]
    for gone in (revoked, expired, exhausted):
        assert requests.get(gone["webdav"], timeout=10).status_code == 404
    assert refused(server, "share", "revoke", "999999") == "there is no link 999999"


def test_managers_may_share_members_may_not(server):
    made = create(server, "box/docs", "--permission", "read", "--as", "boss")
    assert made["target"] == "box/docs"
    assert refused(
        server, "share", "create", "box/docs", "--permission", "read", "--as", "mem"
    ) == ("your role in mailbox 'box' (member) does not allow you to make share links")
    # A dropper learns nothing about names: the same refusal for a missing path.
    for path in ("box/docs/a.txt", "box/no-such-thing"):
        assert refused(server, "share", "create", path, "--permission", "read", "--as", "eve") == (
            "your role in mailbox 'box' (dropper) does not allow you to make share links"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["nobox/x", "--permission", "read"], "there is no mailbox 'nobox'", id="mailbox"
        ),
        pytest.param(
            ["box/missing", "--permission", "read"],
            "there is no file or folder '/missing' in mailbox 'box'",
            id="path",
        ),
        pytest.param(
            ["box/docs/a.txt", "--permission", "drop"],
            "a drop link needs a folder, not a file",
            id="drop-to-file",
        ),
        pytest.param(
            ["box/docs/a.txt", "--permission", "write"],
            "a write link needs a folder, not a file",
            id="write-to-file",
        ),
        pytest.param(
            ["box/../docs", "--permission", "read"],
            "paths may not contain '.' or '..' parts",
            id="dotdot",
        ),
        pytest.param(
            ["box/docs", "--permission", "read", "--as", "nobody"],
            "no user named 'nobody'",
            id="as-unknown",
        ),
        pytest.param(
            ["box/docs", "--permission", "read", "--expires", "tomorrow"],
            "cannot read 'tomorrow' as a time; use e.g. 2026-12-31T17:00 (UTC) or 5d",
            id="expires-text",
        ),
        pytest.param(
            ["box/docs", "--permission", "read", "--expires", "5y"],
            "cannot read '5y' as a time; use e.g. 2026-12-31T17:00 (UTC) or 5d",
            id="expires-unit",
        ),
        pytest.param(
            ["box/docs", "--permission", "read", "--expires", "2020-01-01T00:00"],
            "the expiry time has passed already",
            id="expires-past",
        ),
        pytest.param(
            ["box/docs", "--permission", "drop", "--upload-window", "forever"],
            "cannot read 'forever' as a duration; use e.g. 30m, 12h, 5d or 2w",
            id="window-text",
        ),
        pytest.param(
            ["box/docs", "--permission", "drop", "--upload-window", "2030-01-01"],
            "cannot read '2030-01-01' as a duration; use e.g. 30m, 12h, 5d or 2w",
            id="window-date",
        ),
        pytest.param(
            ["box/docs", "--permission", "read", "--upload-window", "1h"],
            "an upload window is for drop and write links",
            id="window-read",
        ),
        pytest.param(
            ["strict/out", "--permission", "drop", "--expires", "5d"],
            "links in mailbox 'strict' need a password (or a one-time code)",
            id="policy-password",
        ),
    ],
)
def test_refusals_are_one_line_with_exit_status_1(server, args, message):
    assert refused(server, "share", "create", *args) == message


def test_a_links_policy_limits_password_and_expiry(server):
    strict = ["share", "create", "strict/out", "--permission", "drop", "--password-stdin"]
    for extra in (["--expires", "30d"], ["--expires", "15d"], []):
        assert refused(server, *strict, *extra, password=LINK_PASSWORD) == (
            "links in mailbox 'strict' must expire within 14d"
        )
    assert refused(server, *strict, "--expires", "5d", password="short") == (
        "link password: passwords must have at least 10 characters"
    )
    assert (
        refused(
            server,
            "share",
            "create",
            "box/docs",
            "--permission",
            "read",
            "--password-stdin",
            password="",
        )
        == "no password on standard input"
    )
    made = create(
        server, "strict/out", "--permission", "drop", "--expires", "14d", password=LINK_PASSWORD
    )
    assert made["target"] == "strict/out"
    assert requests.put(made["webdav"] + "x.txt", data=b"x", timeout=10).status_code == 401
    dropped = requests.put(
        made["webdav"] + "x.txt", data=b"x", auth=("any", LINK_PASSWORD), timeout=10
    )
    assert dropped.status_code == 201


def test_the_database_keeps_a_digest_of_the_token_and_an_argon2_hash(server):
    made = create(server, "box/docs", "--permission", "read", password=LINK_PASSWORD)
    token = made["token"]
    with server.database().session() as session:
        row = session.execute(select(ShareLink).where(ShareLink.id == int(made["id"]))).scalar_one()
        assert row.token_digest == hashlib.sha256(token.encode()).hexdigest()
        assert token not in row.token_sealed
        assert row.password_hash is not None and row.password_hash.startswith("$argon2id$")
    stored = b"".join(p.read_bytes() for p in server.data_dir.glob("davbox.db*"))
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored
    assert token.encode() not in stored
    assert LINK_PASSWORD.encode() not in stored
