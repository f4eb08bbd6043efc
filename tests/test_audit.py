"""The audit trail against a real server: complete, tamper-evident, fail closed, searchable.

- Completeness: a scripted mix of more than 200 operations over every way in
  (WebDAV as a user and with an app password, WebDAV through a drop and a
  read link, link pages and their upload API, the OCS share API, the web
  login, ``davbox share`` at the command line), refusals among them (policy,
  wrong password, throttled), gives exactly the records expected: one per
  operation (share-link requests also one ``link-used``), none missing,
  none doubled; PROPFIND, HEAD and OPTIONS none.
- Tampering with the table (edit, delete, insert, swap) makes ``davbox audit
  verify`` fail naming the record.
- With the audit table unwritable, an upload is refused with a readable 503
  and leaves nothing in the mailbox, and a download does not start.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from davbox.db.models import Mailbox
from tests.davserver import PASSWORD, DavboxServer
from tests.smtpd import SmtpServer
from tests.test_web_login import WebClient

CONFIG = """
auth:
  throttle_address_failures: 100000
  throttle_account_failures: 4
expiry:
  enabled: false
mail:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  from_address: davbox@example.org
  poll_interval: 0.2
policies:
  - name: box-types
    type: extensions
    mailboxes: ["box", "inbox*"]
    allow: [txt, bin]
  - name: strict-links
    type: links
    mailboxes: [strict]
    require_password: true
  - name: box-expiring-1-hour
    type: retention
    mailboxes: [box]
    paths: ["/expiring/*"]
    delete_after: 1h
"""
ALICE = ("alice", PASSWORD)
LOCK_BODY = (
    b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>"
)
PROPPATCH_BODY = (
    b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:t"><D:set><D:prop>'
    b"<Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"
)
OCS = {"OCS-APIRequest": "true"}
SHARES = "/ocs/v2.php/apps/files_sharing/api/v1/shares"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    mail = SmtpServer().start()
    yield mail
    mail.stop()


@pytest.fixture
def server(tmp_path: Path, smtp: SmtpServer) -> Iterator[DavboxServer]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(smtp_port=smtp.port))
    srv = DavboxServer(tmp_path / "data", config=config).start()
    srv.add_user("alice")
    srv.add_user("victim")
    srv.mailbox("box", alice="manager")
    srv.mailbox("strict", alice="manager")
    yield srv
    srv.stop()


def records(server: DavboxServer, *args: str) -> list[dict[str, Any]]:
    result = server.cli("audit", "query", "--format", "json", *args)
    return json.loads(result.stdout)


def key(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["kind"],
        record["actor"],
        record["mailbox"],
        record["path"],
        record.get("status"),
    )


class Script:
    """Runs operations and notes the records each one must leave."""

    def __init__(self, server: DavboxServer) -> None:
        self.server = server
        self.expected: Counter[tuple[Any, ...]] = Counter()
        self.operations = 0

    def expect(self, *records: tuple[Any, ...]) -> None:
        self.operations += 1
        self.expected.update(records)

    def dav(
        self,
        method: str,
        path: str,
        status: int,
        record: tuple[Any, ...] | None,
        *,
        auth: Any = ALICE,
        url: str | None = None,
        link: tuple[str, int, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        response = requests.request(
            method, url or self.server.dav(path), auth=auth, timeout=10, **kwargs
        )
        assert response.status_code == status, (method, path, response.text)
        expected = [record] if record else []
        if link is not None:  # (mailbox, link id, path inside the mailbox)
            expected.append(("link-used", f"link-{link[1]}", link[0], link[2], None))
        self.expect(*expected)
        return response


def share(server: DavboxServer, target: str, permission: str) -> tuple[int, str]:
    out = server.cli("share", "create", target, "--permission", permission).stdout
    link_id = int(re.search(r"created \w+ link (\d+)", out).group(1))  # type: ignore[union-attr]
    token = re.search(r"link: \S+/s/(\S+)", out).group(1)  # type: ignore[union-attr]
    return link_id, token


def test_every_operation_leaves_exactly_one_record(server: DavboxServer, smtp: SmtpServer) -> None:
    s = Script(server)
    before = len(records(server))
    app = server.cli("app-password", "create", "alice", "--label", "sync").stdout
    app_password = re.search(r"\(shown once\): (\S+)", app).group(1)  # type: ignore[union-attr]
    app_auth = ("alice", app_password)

    # -- WebDAV as a user: every changing method, downloads whole and partial ------------
    assert s.dav("MKCOL", "box/in", 201, ("mkcol", "alice", "box", "/in", 201))
    for i in range(14):
        name = f"/in/f{i}.txt"
        s.dav("PUT", f"box{name}", 201, ("upload", "alice", "box", name, 201), data=b"x" * i)
        s.dav("PUT", f"box{name}", 204, ("upload", "alice", "box", name, 204), data=b"y" * 9)
        s.dav("GET", f"box{name}", 200, ("download", "alice", "box", name, 200))
        s.dav(
            "GET",
            f"box{name}",
            206,
            ("download", "alice", "box", name, 206),
            headers={"Range": "bytes=2-4"},
        )
        s.dav("HEAD", f"box{name}", 200, None)
        s.dav("PROPFIND", f"box{name}", 207, None, headers={"Depth": "0"})
        s.dav(
            "PROPPATCH",
            f"box{name}",
            207,
            ("proppatch", "alice", "box", name, 207),
            data=PROPPATCH_BODY,
        )
        locked = s.dav(
            "LOCK", f"box{name}", 200, ("lock", "alice", "box", name, 200), data=LOCK_BODY
        )
        s.dav(
            "UNLOCK",
            f"box{name}",
            204,
            ("unlock", "alice", "box", name, 204),
            headers={"Lock-Token": locked.headers["Lock-Token"]},
        )
        copy = f"/in/c{i}.txt"
        s.dav(
            "COPY",
            f"box{name}",
            201,
            ("copy", "alice", "box", name, 201),
            headers={"Destination": server.dav(f"box{copy}")},
        )
        moved = f"/in/m{i}.txt"
        s.dav(
            "MOVE",
            f"box{copy}",
            201,
            ("move", "alice", "box", copy, 201),
            headers={"Destination": server.dav(f"box{moved}")},
        )
        s.dav("DELETE", f"box{moved}", 204, ("delete", "alice", "box", moved, 204))
    s.dav("DELETE", "box/in/none.txt", 404, ("delete", "alice", "box", "/in/none.txt", 404))

    # -- refusals: a policy, a wrong password, throttling ---------------------------------
    for i in range(3):
        s.dav(
            "PUT",
            f"box/in/tool{i}.exe",
            415,
            ("access-refused", "alice", "box", f"/in/tool{i}.exe", 415),
            data=b"MZ",
        )
        s.dav(
            "GET",
            "box/in/f1.txt",
            401,
            ("login-refused", "alice", "", "", 401),
            auth=("alice", "wrong"),
        )
    for _ in range(4):
        s.dav("GET", "box/", 401, ("login-refused", "victim", "", "", 401), auth=("victim", "x"))
    for _ in range(2):
        s.dav("GET", "box/", 429, ("login-refused", "victim", "", "", 429), auth=("victim", "x"))

    # -- WebDAV with an app password ---------------------------------------------------------
    for i in range(5):
        name = f"/in/app{i}.txt"
        s.dav(
            "PUT",
            f"box{name}",
            201,
            ("upload", "alice", "box", name, 201),
            data=b"a",
            auth=app_auth,
        )
        s.dav("GET", f"box{name}", 200, ("download", "alice", "box", name, 200), auth=app_auth)

    # -- command line: share links made and revoked by the administrator ---------------------
    drop_id, drop_token = share(server, "box/in", "drop")
    read_id, read_token = share(server, "box/in", "read")
    spare_id, _ = share(server, "box/in", "read")
    s.expect(("link-created", "admin", "box", "/in", None))
    s.expect(("link-created", "admin", "box", "/in", None))
    s.expect(("link-created", "admin", "box", "/in", None))
    server.cli("share", "revoke", str(spare_id))
    s.expect(("link-revoked", "admin", "box", "/in", None))

    # -- WebDAV through a drop link and a read link ------------------------------------------
    drop_actor, read_actor = f"link-{drop_id}", f"link-{read_id}"
    for i in range(5):
        name = f"/in/dropped{i}.txt"
        s.dav(
            "PUT",
            "",
            201,
            ("upload", drop_actor, "box", name, 201),
            auth=None,
            url=f"{server.url}/s/{drop_token}/dav/dropped{i}.txt",
            link=("box", drop_id, name),
            data=b"dropped",
        )
    s.dav(
        "PUT",
        "",
        415,
        ("access-refused", drop_actor, "box", "/in/bad.exe", 415),
        auth=None,
        url=f"{server.url}/s/{drop_token}/dav/bad.exe",
        link=("box", drop_id, "/in/bad.exe"),
        data=b"MZ",
    )
    for i in range(5):
        name = f"/in/f{i}.txt"
        s.dav(
            "GET",
            "",
            200,
            ("download", read_actor, "box", name, 200),
            auth=(read_token, ""),
            url=f"{server.url}/public.php/webdav/f{i}.txt",
            link=("box", read_id, name),
        )
    s.dav(
        "PROPFIND",
        "",
        207,
        None,
        auth=None,
        url=f"{server.url}/s/{read_token}/dav/",
        link=("box", read_id, "/in/"),
        headers={"Depth": "1"},
    )

    # -- link pages in the browser: views, downloads, an upload through the API ---------------
    browser = WebClient(server)
    for i in range(3):
        assert browser.get(f"/s/{read_token}").status_code == 200
        s.expect(("link-viewed", read_actor, "box", "/in", None))
        assert browser.get(f"/s/{read_token}/files/f{i}.txt").status_code == 200
        s.expect(("link-downloaded", read_actor, "box", f"/in/f{i}.txt", 200))
        part = browser.request(
            "GET", f"/s/{read_token}/files/f{i}.txt", headers={"Range": "bytes=1-2"}
        )
        assert part.status_code == 206  # not from the start: no download counted, but recorded
        s.expect(("link-downloaded", read_actor, "box", f"/in/f{i}.txt", 206))
    page = browser.get(f"/s/{drop_token}")
    s.expect(("link-viewed", drop_actor, "box", "/in", None))
    csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    headers = {
        "X-Davbox-CSRF": csrf,
        "Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies.items()),
    }
    base = f"{server.url}/s/{drop_token}/uploads"
    started = requests.post(
        base, json={"name": "page.txt", "size": 4, "folder": ""}, headers=headers, timeout=10
    )
    assert started.status_code == 201, started.text
    upload = f"{base}/{started.json()['id']}"
    assert (
        requests.put(f"{upload}?offset=0", data=b"page", headers=headers, timeout=10).status_code
        == 200
    )
    assert requests.post(upload, headers=headers, timeout=10).status_code == 201
    s.expect(("link-uploaded", drop_actor, "box", "/in/page.txt", 201))

    # -- the OCS share API: made, refused by a policy, revoked -----------------------------
    made = requests.post(
        f"{server.url}{SHARES}?format=json",
        data={"shareType": 3, "path": "/box/in"},
        auth=ALICE,
        headers=OCS,
        timeout=10,
    )
    assert made.status_code == 200, made.text
    ocs_id = made.json()["ocs"]["data"]["id"]
    s.expect(("link-created", "alice", "box", "/in", None))
    refused = requests.post(
        f"{server.url}{SHARES}?format=json",
        data={"shareType": 3, "path": "/strict"},
        auth=ALICE,
        headers=OCS,
        timeout=10,
    )
    assert refused.status_code == 403, refused.text
    s.expect(("access-refused", "alice", "strict", "/", 403))
    gone = requests.delete(
        f"{server.url}{SHARES}/{ocs_id}?format=json", auth=ALICE, headers=OCS, timeout=10
    )
    assert gone.status_code == 200, gone.text
    s.expect(("link-revoked", "alice", "box", "/in", None))

    # -- web login: a wrong password, then a right one --------------------------------------
    web = WebClient(server)
    assert web.log_in("alice", "not-it").status_code == 401
    s.expect(("login-refused", "alice", "", "", 401))
    assert web.log_in("alice").status_code == 303
    s.expect(("login-succeeded", "alice", "", "", None))

    # -- delivery reports on the web ---------------------------------------------------------
    assert web.get(f"/account/links/{read_id}").status_code == 200
    s.expect(("report-viewed", "alice", "box", "/in", 200))
    assert web.get(f"/account/links/{read_id}?format=pdf").status_code == 200
    s.expect(("report-viewed", "alice", "box", "/in", 200))

    # -- SecureTransfer: a link sent with a code, its page, a wrong and a right code ----------
    sent = server.cli("send", "box/in/f1.txt", "--to", "ext@example.org", "--as", "alice")
    sent_id = int(re.search(r"link (\d+)", sent.stdout).group(1))  # type: ignore[union-attr]
    sent_token = re.search(r"/s/(\S+)", sent.stdout).group(1)  # type: ignore[union-attr]
    s.expect(("link-created", "alice", "box", "/in/f1.txt", None))
    sent_actor = f"link-{sent_id}"
    external = WebClient(server)
    assert external.get(f"/s/{sent_token}/code").status_code == 200
    s.expect(("link-code-sent", sent_actor, "box", "/in/f1.txt", 200))
    code_mail = next(
        m for m in smtp.wait_for(2) if m.envelope_to == ["ext@example.org"] and "code" in m.subject
    )
    code = re.search(r"^\s+(\d{6})$", code_mail.text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    wrong = external.post(
        f"/s/{sent_token}/code",
        {"csrf": external.csrf, "code": str((int(code) + 1) % 10**6).zfill(6)},
    )
    assert wrong.status_code == 401
    s.expect(("login-refused", sent_actor, "box", "", 401))
    assert (
        external.post(f"/s/{sent_token}/code", {"csrf": external.csrf, "code": code}).status_code
        == 303
    )
    s.expect(("login-succeeded", sent_actor, "box", "", None))
    assert external.get(f"/s/{sent_token}/download").status_code == 200
    s.expect(("link-downloaded", sent_actor, "box", "/in/f1.txt", 200))
    refused_dav = requests.get(f"{server.url}/s/{sent_token}/dav/", timeout=10)
    assert refused_dav.status_code == 403
    s.expect(("access-refused", sent_actor, "box", "/in/f1.txt", 403))

    # -- the expiry job, and a configuration reload -----------------------------------------------
    s.dav("MKCOL", "box/expiring", 201, ("mkcol", "alice", "box", "/expiring", 201))
    s.dav(
        "PUT",
        "box/expiring/old.txt",
        201,
        ("upload", "alice", "box", "/expiring/old.txt", 201),
        data=b"o",
    )
    later = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    assert server.cli("expiry", "run", "--now", later).stdout.endswith("1 file(s) deleted\n")
    s.expect(("expiry-delete", "system", "box", "/expiring/old.txt", 204))
    watched = server._config_file()
    watched.write_text(watched.read_text() + "\n# touched\n")
    deadline = time.monotonic() + 10
    while not any(r["kind"] == "config-reload" for r in records(server)[before:]):
        assert time.monotonic() < deadline, "the configuration was not reloaded"
        time.sleep(0.2)
    s.expect(("config-reload", "system", "", str(watched), None))

    found = records(server)[before:]
    assert s.operations >= 200
    assert Counter(key(r) for r in found) == s.expected
    # One request, one operation record: no request id carries two of the same kind.
    per_request = Counter((r["request_id"], r["kind"]) for r in found if r["request_id"])
    assert max(per_request.values()) == 1
    assert server.cli("audit", "verify").stdout.startswith(f"{len(found) + before} records")


def test_records_carry_who_how_and_what(server: DavboxServer) -> None:
    app = server.cli("app-password", "create", "alice", "--label", "phone").stdout
    app_password = re.search(r"\(shown once\): (\S+)", app).group(1)  # type: ignore[union-attr]
    data = b"some content\n" * 100
    headers = {"User-Agent": "audit-test/1.0"}
    assert (
        requests.put(
            server.dav("box/a.txt"), data=data, auth=ALICE, headers=headers, timeout=10
        ).status_code
        == 201
    )
    assert (
        requests.put(
            server.dav("box/a.txt"), data=b"new", auth=("alice", app_password), timeout=10
        ).status_code
        == 204
    )
    first, second = records(server, "--event", "upload")
    import hashlib

    assert first["sha256"] == hashlib.sha256(data).hexdigest()
    assert first["size"] == len(data) and first["replaced"] is False
    assert first["user_agent"] == "audit-test/1.0"
    assert first["actor_kind"] == "user" and first["credential_id"] is None
    assert first["client"] == "127.0.0.1"
    assert first["time"].endswith("+00:00")
    assert second["actor_kind"] == "app-password" and isinstance(second["credential_id"], int)
    assert second["replaced"] is True and second["status"] == 204
    # Nothing secret is recorded: no password, no file content.
    dump = server.cli("audit", "query", "--format", "json").stdout
    assert PASSWORD not in dump and app_password not in dump and "some content" not in dump


def test_downloads_record_bytes_sent_and_abandoned_transfers(server: DavboxServer) -> None:
    data = bytes(range(256)) * 262144  # 64 MiB: more than socket buffers hold
    assert (
        requests.put(server.dav("box/big.bin"), data=data, auth=ALICE, timeout=10).status_code
        == 201
    )
    with requests.get(server.dav("box/big.bin"), auth=ALICE, stream=True, timeout=10) as response:
        next(response.iter_content(65536))
    got = requests.get(
        server.dav("box/big.bin"), auth=ALICE, headers={"Range": "bytes=100-"}, timeout=10
    )
    assert got.status_code == 206
    import time

    for _ in range(50):
        downloads = records(server, "--event", "download")
        if len(downloads) == 2:
            break
        time.sleep(0.1)
    abandoned, partial = sorted(downloads, key=lambda r: r["status"])
    assert abandoned["status"] == 200 and abandoned["complete"] is False
    assert 0 < abandoned["size"] < len(data)
    assert partial["range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert partial["size"] == len(data) - 100 and partial["complete"] is True


# -- tampering -------------------------------------------------------------------------------


def database(server: DavboxServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "davbox.db")


@pytest.fixture
def filled(server: DavboxServer) -> DavboxServer:
    for i in range(6):
        assert (
            requests.put(server.dav(f"box/t{i}.txt"), data=b"t", auth=ALICE, timeout=10).status_code
            == 201
        )
    assert server.cli("audit", "verify").stdout.startswith("6 records, chain intact")
    return server


def verify_fails(server: DavboxServer) -> str:
    result = server.cli("audit", "verify", check=False)
    assert result.returncode == 1, result.stdout
    return result.stderr


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param(
            "UPDATE audit_records SET record = replace(record, '/t2.txt', '/x2.txt') WHERE seq = 3",
            "record 3: changed: its contents do not match its seal",
            id="edit-the-sealed-record",
        ),
        pytest.param(
            "UPDATE audit_records SET actor = 'mallory' WHERE seq = 4",
            "record 4: changed: column 'actor' differs from the sealed record",
            id="edit-a-column",
        ),
        pytest.param(
            "DELETE FROM audit_records WHERE seq = 2",
            "record 2: missing: record 2 was removed (next is 3)",
            id="delete-a-row",
        ),
        pytest.param(
            "DELETE FROM audit_records WHERE seq = 6",
            "chain head: records 6 to 6 were removed from the end",
            id="delete-the-last-row",
        ),
        pytest.param(
            "INSERT INTO audit_records (seq, at, kind, request_id, actor, mailbox, path, status,"
            " record, prev_hash, hash) SELECT 7, at, kind, request_id, actor, mailbox, path,"
            " status, record, hash, hash FROM audit_records WHERE seq = 6",
            "record 7: changed: its contents do not match its seal",
            id="insert-a-row",
        ),
        pytest.param(
            "UPDATE audit_records SET seq = -seq WHERE seq IN (3, 4);"
            " UPDATE audit_records SET seq = 4 WHERE seq = -3;"
            " UPDATE audit_records SET seq = 3 WHERE seq = -4",
            "record 3: changed: its contents do not match its seal",
            id="swap-two-rows",
        ),
    ],
)
def test_tampering_is_found_and_named(filled: DavboxServer, sql: str, message: str) -> None:
    with database(filled) as connection:
        connection.executescript(sql)
    assert message in verify_fails(filled)


# -- fail closed -------------------------------------------------------------------------------


def storage_files(server: DavboxServer, mailbox: str) -> list[str]:
    with server.database().session() as session:
        key_ = session.execute(
            select(Mailbox.storage_key).where(Mailbox.name == mailbox)
        ).scalar_one()
    folder = server.data_dir / "storage" / "mailboxes" / key_
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_without_an_audit_trail_nothing_is_stored_or_sent(server: DavboxServer) -> None:
    assert (
        requests.put(server.dav("box/old.txt"), data=b"old", auth=ALICE, timeout=10).status_code
        == 201
    )
    with database(server) as connection:
        connection.execute(
            "CREATE TRIGGER audit_off BEFORE INSERT ON audit_records"
            " BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"
        )
    new = requests.put(server.dav("box/new.txt"), data=b"new", auth=ALICE, timeout=10)
    assert new.status_code == 503
    assert "the audit trail cannot record this upload, so it was not stored" in new.text
    over = requests.put(server.dav("box/old.txt"), data=b"replaced", auth=ALICE, timeout=10)
    assert over.status_code == 503
    assert storage_files(server, "box") == ["old.txt"]
    got = requests.get(server.dav("box/old.txt"), auth=ALICE, timeout=10)
    assert got.status_code == 503
    assert "the audit trail cannot be written, so nothing is done now" in got.text
    assert b"old" not in got.content
    assert requests.delete(server.dav("box/old.txt"), auth=ALICE, timeout=10).status_code == 503
    assert storage_files(server, "box") == ["old.txt"]
    with database(server) as connection:
        connection.execute("DROP TRIGGER audit_off")
    assert requests.get(server.dav("box/old.txt"), auth=ALICE, timeout=10).content == b"old"
    assert server.cli("audit", "verify").stdout.startswith("2 records, chain intact")


# -- query and history -------------------------------------------------------------------------


def test_query_filters_and_formats(server: DavboxServer) -> None:
    for name in ("a.txt", "b.txt"):
        assert (
            requests.put(server.dav(f"box/{name}"), data=b"1", auth=ALICE, timeout=10).status_code
            == 201
        )
    assert requests.get(server.dav("box/a.txt"), auth=ALICE, timeout=10).status_code == 200
    assert [r["path"] for r in records(server, "--path", "/a.txt")] == ["/a.txt", "/a.txt"]
    assert [r["kind"] for r in records(server, "--event", "download")] == ["download"]
    assert len(records(server, "--mailbox", "box", "--actor", "alice")) == 3
    assert records(server, "--actor", "bob") == []
    assert records(server, "--since", "2999-01-01") == []
    assert len(records(server, "--until", "2999-01-01")) == 3
    table = server.cli("audit", "query", "--event", "upload").stdout.splitlines()
    assert table[0].split()[:4] == ["seq", "time", "kind", "status"]
    assert "b.txt" in table[2] and "sha256=" in table[2]
    csv_lines = server.cli(
        "audit", "query", "--format", "csv", "--path", "/b.txt"
    ).stdout.splitlines()
    assert csv_lines[0].startswith("seq,time,kind,") and len(csv_lines) == 2
    bad = server.cli("audit", "query", "--since", "yesterday", check=False)
    assert bad.returncode == 1 and "--since: expected an ISO 8601 time" in bad.stderr


def test_history_of_a_file_follows_moves(server: DavboxServer) -> None:
    assert (
        requests.put(server.dav("box/draft.txt"), data=b"1", auth=ALICE, timeout=10).status_code
        == 201
    )
    assert requests.get(server.dav("box/draft.txt"), auth=ALICE, timeout=10).status_code == 200
    moved = requests.request(
        "MOVE",
        server.dav("box/draft.txt"),
        auth=ALICE,
        headers={"Destination": server.dav("box/final.txt")},
        timeout=10,
    )
    assert moved.status_code == 201
    assert requests.get(server.dav("box/final.txt"), auth=ALICE, timeout=10).status_code == 200
    assert (
        requests.put(server.dav("box/other.txt"), data=b"2", auth=ALICE, timeout=10).status_code
        == 201
    )
    story = json.loads(server.cli("audit", "history", "box/final.txt", "--format", "json").stdout)
    assert [(r["kind"], r["path"]) for r in story] == [
        ("upload", "/draft.txt"),
        ("download", "/draft.txt"),
        ("move", "/draft.txt"),
        ("download", "/final.txt"),
    ]
    assert all(r["actor"] == "alice" and r["client"] == "127.0.0.1" for r in story)


# -- in-process: the chain under concurrency, client addresses behind proxies ----------------


def test_appends_from_many_threads_and_engines_form_one_chain(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from davbox.audit import AuditStore
    from davbox.db import Database
    from davbox.events import Deleted

    url = f"sqlite:///{tmp_path / 'a.db'}"
    first = Database(url)
    first.upgrade()
    second = Database(url)  # another engine: other connections, as another process has
    stores = [AuditStore(first), AuditStore(second)]

    def work(n: int) -> list[int]:
        store = stores[n % 2]
        return [store.append(Deleted(actor=f"t{n}", mailbox="m", path=f"/{i}")) for i in range(25)]

    with ThreadPoolExecutor(8) as pool:
        numbers = [seq for batch in pool.map(work, range(8)) for seq in batch]
    assert sorted(numbers) == list(range(1, 201))
    verdict = stores[0].verify()
    assert verdict.problem is None and verdict.records == 200
    first.dispose()
    second.dispose()


def test_trimming_keeps_a_sealed_anchor_that_verify_checks(tmp_path: Path) -> None:
    from davbox.audit import AuditStore
    from davbox.db import Database
    from davbox.events import Deleted

    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.upgrade()
    store = AuditStore(db)
    old = datetime.now(UTC) - timedelta(days=400)
    for i in range(10):
        store.append(Deleted(actor="a", mailbox="m", path=f"/old{i}", time=old))
    for i in range(5):
        store.append(Deleted(actor="a", mailbox="m", path=f"/new{i}"))
    assert store.trim(datetime.now(UTC) - timedelta(days=365)) == (10, 10)
    verdict = store.verify()
    assert verdict.problem is None and verdict.records == 5 and verdict.first == 11
    assert store.trim(datetime.now(UTC) - timedelta(days=365)) == (0, 0)  # again: nothing

    def broken(sql: str) -> str:
        with sqlite3.connect(tmp_path / "a.db") as conn:
            conn.execute(sql)
        problem = store.verify().problem
        assert problem is not None
        return str(problem)

    assert "trim anchor" in broken("UPDATE audit_head SET anchor_seq = 11")  # moved by hand
    assert "trim anchor" in broken("UPDATE audit_head SET anchor_seq = 10, anchor_hash = 'x'")
    db.dispose()
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    store = AuditStore(db)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_head SET anchor_hash = NULL")
    assert "trim anchor" in str(store.verify().problem)


def test_download_records_are_batched_but_keep_their_place(tmp_path: Path) -> None:
    """Downloads are sealed later and together, yet before any record of what came after;
    while the store refuses, they wait (and the refused operation's record is not written)."""
    import time

    from davbox.audit import AuditSink, AuditStore, AuditUnavailable
    from davbox.db import Database
    from davbox.events import Deleted, Downloaded

    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.upgrade()
    store = AuditStore(db)
    sink = AuditSink(store)
    sink.LINGER = 30  # the writer would wait that long: only the next sync record writes them
    for i in range(5):
        sink.handle(Downloaded(actor="a", mailbox="m", path=f"/{i}", size=i))
    assert list(store.query()) == []
    sink.handle(Deleted(actor="a", mailbox="m", path="/0"))
    assert [(r["kind"], r["path"]) for r in store.query()] == [
        *[("download", f"/{i}") for i in range(5)],
        ("delete", "/0"),
    ]

    sink.handle(Downloaded(actor="a", mailbox="m", path="/1", size=1))
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE audit_head")  # the store cannot write any more
    with pytest.raises(AuditUnavailable):
        sink.handle(Deleted(actor="a", mailbox="m", path="/1"))
    assert len(list(store.query())) == 6
    assert [event.path for event in sink._waiting] == ["/1"]  # still waiting, not lost
    sink.close(timeout=5)  # (the store stays broken: the writer gives up at close)
    assert sink._writer is not None and not sink._writer.is_alive()

    other = AuditSink(store)  # the writer thread on its own, with a short linger
    other.LINGER = 0.01
    fresh = Database(f"sqlite:///{tmp_path / 'b.db'}")
    fresh.upgrade()
    other.store = AuditStore(fresh)
    other.handle(Downloaded(actor="a", mailbox="m", path="/x", size=3))
    deadline = time.monotonic() + 10
    while not list(other.store.query()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r["path"] for r in other.store.query()] == ["/x"]
    other.close()
    db.dispose()
    fresh.dispose()


@pytest.mark.parametrize(
    ("trusted", "remote", "forwarded", "client"),
    [
        pytest.param([], "10.0.0.1", "203.0.113.9", "10.0.0.1", id="no-proxies-configured"),
        pytest.param(
            ["10.0.0.0/8"], "192.0.2.5", "203.0.113.9", "192.0.2.5", id="not-from-a-proxy"
        ),
        pytest.param(["10.0.0.0/8"], "10.0.0.1", "203.0.113.9", "203.0.113.9", id="one-proxy"),
        pytest.param(
            ["10.0.0.0/8"],
            "10.0.0.1",
            "198.51.100.1, 203.0.113.9, 10.0.0.7",
            "203.0.113.9",
            id="spoofed-left-part-ignored",
        ),
        pytest.param(["10.0.0.0/8"], "10.0.0.1", "", "10.0.0.1", id="no-header"),
        pytest.param(["10.0.0.0/8"], "10.0.0.1", "junk, 10.0.0.9", "10.0.0.9", id="junk-stops"),
        pytest.param(["::1/128"], "::1", "[2001:db8::1]:4711", "2001:db8::1", id="ipv6-with-port"),
    ],
)
def test_client_address_behind_trusted_proxies(
    trusted: list[str], remote: str, forwarded: str, client: str
) -> None:
    from davbox.proxies import ClientAddress

    environ = {"REMOTE_ADDR": remote, "HTTP_X_FORWARDED_FOR": forwarded}
    ClientAddress(trusted).apply(environ)
    assert environ["REMOTE_ADDR"] == client
