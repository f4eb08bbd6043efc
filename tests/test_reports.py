"""Delivery reports against a real server: HTML pages, PDFs read back as text, the CLI.

One server for the module. Behind a trusted proxy (127.0.0.1), each party
sends its own ``X-Forwarded-For`` and ``User-Agent``, so every report line
can be checked for who, from where and with what:

- an external person drops two files through alice's drop link (WebDAV),
- another fetches one through alice's read link: whole over WebDAV, a range,
  and from the link page,
- alice fetches it herself; bob (a member) places a file of his own.

The PDFs are turned back into text with pypdf; the tests assert on events,
actors, addresses, programs and byte counts in them, in English and Dutch.
Access: the link's creator, the mailbox's manager and administrators see a
link's report; others (and ids that do not exist) get the same 404.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pypdf import PdfReader

from davbox import accounts
from davbox.reports import event_of
from tests.davserver import PASSWORD, DavboxServer
from tests.test_web_login import WebClient

PUBLIC_URL = "https://files.example.test"
CONFIG = f"""
server:
  public_url: {PUBLIC_URL}
  trusted_proxies: ["127.0.0.1/32"]
"""
LETTER = b"Dear recipient,\n" * 64  # 1024 bytes
SCAN = b"%scan%" * 500  # 3000 bytes
DROPPER = {"X-Forwarded-For": "203.0.113.7", "User-Agent": "ScanStation/2.1"}
RECIPIENT = {"X-Forwarded-For": "198.51.100.23", "User-Agent": "CourierClient/1.0"}
ALICE_AT = {"X-Forwarded-For": "192.0.2.44", "User-Agent": "AliceDesk/3.0"}
BOB_AT = {"X-Forwarded-For": "192.0.2.99", "User-Agent": "BobSync/0.9"}


def share(server: DavboxServer, target: str, permission: str, user: str) -> tuple[int, str]:
    out = server.cli("share", "create", target, "--permission", permission, "--as", user).stdout
    link_id = int(re.search(r"created \w+ link (\d+)", out).group(1))  # type: ignore[union-attr]
    token = re.search(r"link: \S+/s/(\S+)", out).group(1)  # type: ignore[union-attr]
    return link_id, token


def wait_for_downloads(server: DavboxServer, count: int) -> None:
    """Finished downloads are sealed by a writer thread: wait until ``count`` are in."""
    for _ in range(100):
        found = json.loads(
            server.cli("audit", "query", "--event", "download", "--format", "json").stdout
        )
        if len(found) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"expected {count} download records, found {len(found)}")


def pdf_text(body: bytes) -> str:
    assert body.startswith(b"%PDF-"), body[:100]
    reader = PdfReader(io.BytesIO(body))
    return "\n".join(page.extract_text() for page in reader.pages)


def flat(text: str) -> str:
    """PDF text with line breaks inside table cells undone."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("reports")
    config = base / "davbox.yaml"
    config.write_text(CONFIG)
    server = DavboxServer(base / "data", config=config).start()
    for name in ("alice", "bob", "carol", "dave"):
        server.add_user(name)
    accounts.add_user(server.database(), "root", PASSWORD, is_admin=True)
    server.mailbox("box", alice="manager", bob="member")
    server.mailbox("other", dave="manager", carol="member")
    alice = ("alice", PASSWORD)
    assert (
        requests.request("MKCOL", server.dav("box/in"), auth=alice, timeout=10).status_code == 201
    )

    drop_id, drop_token = share(server, "box/in", "drop", "alice")
    read_id, read_token = share(server, "box/in", "read", "alice")
    idle_id, _ = share(server, "box/in", "read", "alice")
    server.cli("share", "revoke", str(idle_id))

    # An external person drops two files through the drop link.
    for name, body in (("letter.txt", LETTER), ("scan.bin", SCAN)):
        put = requests.put(
            f"{server.url}/s/{drop_token}/dav/{name}", data=body, headers=DROPPER, timeout=10
        )
        assert put.status_code == 201, put.text
    # The recipient fetches the letter through the read link: whole, a range, the page.
    link_dav = f"{server.url}/s/{read_token}/dav/letter.txt"
    whole = requests.get(link_dav, headers=RECIPIENT, timeout=10)
    assert whole.status_code == 200 and whole.content == LETTER
    part = requests.get(link_dav, headers={**RECIPIENT, "Range": "bytes=0-9"}, timeout=10)
    assert part.status_code == 206 and len(part.content) == 10
    page = requests.get(
        f"{server.url}/s/{read_token}/files/letter.txt", headers=RECIPIENT, timeout=10
    )
    assert page.status_code == 200 and page.content == LETTER
    # Alice fetches it as herself; bob places a file of his own.
    mine = requests.get(server.dav("box/in/letter.txt"), auth=alice, headers=ALICE_AT, timeout=10)
    assert mine.status_code == 200
    bobs = requests.put(
        server.dav("box/in/bob.txt"),
        data=b"from bob",
        auth=("bob", PASSWORD),
        headers=BOB_AT,
        timeout=10,
    )
    assert bobs.status_code == 201
    wait_for_downloads(server, 3)

    yield {
        "server": server,
        "drop_id": drop_id,
        "read_id": read_id,
        "idle_id": idle_id,
    }
    server.stop()


def logged_in(server: DavboxServer, name: str) -> WebClient:
    client = WebClient(server)
    assert client.log_in(name).status_code == 303
    return client


# -- the data: one line per record, categorized -------------------------------------------------


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(
            {"kind": "download", "status": 200, "size": 5, "range": "", "complete": True},
            ("fetched", 5, True),
            id="whole-download",
        ),
        pytest.param(
            {"kind": "download", "status": 206, "size": 3, "range": "bytes 0-2/9"},
            ("fetched", 3, False),
            id="range",
        ),
        pytest.param(
            {"kind": "download", "status": 200, "size": 2, "complete": False},
            ("fetched", 2, False),
            id="abandoned",
        ),
        pytest.param({"kind": "upload", "status": 201, "size": 4}, ("placed", 4, None), id="put"),
        pytest.param(
            {"kind": "upload", "status": 507, "size": 4}, ("failed", 4, None), id="failed-put"
        ),
        pytest.param(
            {"kind": "link-downloaded", "archive": True}, ("fetched", None, False), id="zip"
        ),
        pytest.param(
            {"kind": "link-used", "method": "PROPFIND"}, ("viewed", None, None), id="listing"
        ),
        pytest.param({"kind": "access-refused", "status": 415}, ("refused", None, None), id="no"),
    ],
)
def test_records_become_report_lines(record: dict[str, Any], expected: tuple[Any, ...]) -> None:
    event = event_of({"seq": 1, "time": "2026-01-02T03:04:05.000000+00:00", **record})
    assert event is not None
    assert (event.category, event.size, event.whole) == expected


@pytest.mark.parametrize("kind", ["lock", "unlock", "proppatch", "report-viewed"])
def test_records_that_are_no_deliveries_are_left_out(kind: str) -> None:
    assert event_of({"kind": kind, "seq": 1, "time": ""}) is None
    assert event_of({"kind": "link-used", "method": "GET", "seq": 1, "time": ""}) is None


# -- web pages ----------------------------------------------------------------------------------


def test_overview_of_my_links(world: dict[str, Any]) -> None:
    server = world["server"]
    client = logged_in(server, "alice")
    page = client.get("/account/links")
    assert page.status_code == 200
    rows = {
        int(m.group(1)): m.group(0)
        for m in re.finditer(
            r'<tr class="\w+">\s*<td><a href="/account/links/(\d+)">.*?</tr>', page.text, re.S
        )
    }
    assert set(rows) == {world["drop_id"], world["read_id"], world["idle_id"]}
    cells = lambda row: re.findall(r"<td>(.*?)</td>", row, re.S)  # noqa: E731
    drop, read, idle = (cells(rows[world[k]]) for k in ("drop_id", "read_id", "idle_id"))
    # placed, fetched, bytes sent
    assert drop[6:9] == ["2", "0", "0"] and drop[3] == "active"
    assert read[6:9] == ["0", "3", str(2 * len(LETTER) + 10)]
    assert idle[3] == "revoked" and idle[9] == "never"
    assert "/account/files" in page.text  # the form that opens a file's report


def test_link_report_page_shows_every_placement(world: dict[str, Any]) -> None:
    server = world["server"]
    page = logged_in(server, "alice").get(f"/account/links/{world['drop_id']}")
    assert page.status_code == 200
    text = page.text
    assert f"Delivery report of link {world['drop_id']}" in text
    placed = re.findall(r'<tr class="placed">(.*?)</tr>', text, re.S)
    assert len(placed) == 2
    for row, (name, body) in zip(placed, (("letter.txt", LETTER), ("scan.bin", SCAN)), strict=True):
        assert f"link-{world['drop_id']}" in row
        assert "203.0.113.7" in row and "ScanStation/2.1" in row
        assert f'href="/account/files/box/in/{name}"' in row
        assert f"<td>{len(body)}</td>" in row
    assert '<tr class="link">' in text and "link created" in text and "alice" in text
    assert f'href="/account/links/{world["drop_id"]}?format=pdf"' in text


def test_link_report_pdf_has_every_fetch_by_whom_from_where(world: dict[str, Any]) -> None:
    server = world["server"]
    response = logged_in(server, "alice").get(f"/account/links/{world['read_id']}?format=pdf")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert "attachment" in response.headers["Content-Disposition"]
    text = flat(pdf_text(response.content))
    assert f"Delivery report of link {world['read_id']}" in text
    assert PUBLIC_URL in text
    assert "Permission read (download)" in text and "Status active" in text
    assert "Created by alice" in text
    assert "Files fetched 3" in text and f"Bytes sent {2 * len(LETTER) + 10}" in text
    actor = f"link-{world['read_id']}"
    # Whole over WebDAV, the range, the page download: each with address and program.
    assert re.search(
        rf"download over WebDAV {actor} 198\.51\.100\.23 box/in/letter\.txt {len(LETTER)} yes"
        r" CourierClient/1\.0",
        text,
    ), text
    assert re.search(
        rf"download over WebDAV {actor} 198\.51\.100\.23 box/in/letter\.txt 10 no"
        rf" CourierClient/1\.0 bytes 0-9/{len(LETTER)}",
        text,
    ), text
    assert re.search(
        rf"download on the link page {actor} 198\.51\.100\.23 box/in/letter\.txt {len(LETTER)}"
        " yes CourierClient/1.0",
        text,
    ), text
    assert "link created alice" in text
    # Alice's own download is no fetch through the link.
    assert "192.0.2.44" not in text


def test_file_report_pdf_names_who_placed_and_who_fetched(world: dict[str, Any]) -> None:
    server = world["server"]
    client = logged_in(server, "alice")
    html = client.get("/account/files/box/in/letter.txt")
    assert html.status_code == 200 and "Delivery report of a file" in html.text
    response = client.get("/account/files/box/in/letter.txt?format=pdf")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/pdf"
    text = flat(pdf_text(response.content))
    assert "Mailbox box" in text and "Path /in/letter.txt" in text
    assert "Files placed 1" in text and "Files fetched 4" in text
    assert re.search(
        rf"placed: upload over WebDAV link-{world['drop_id']} 203\.0\.113\.7 box/in/letter\.txt"
        rf" {len(LETTER)} - ScanStation/2\.1 sha256 [0-9a-f]{{8}}",
        text,
    ), text
    assert re.search(
        rf"download over WebDAV alice 192\.0\.2\.44 box/in/letter\.txt {len(LETTER)} yes"
        r" AliceDesk/3\.0",
        text,
    ), text
    assert text.count("198.51.100.23") == 3  # whole, range and from the link page
    # The form on the overview leads here.
    form = client.get("/account/files?target=box/in/letter.txt")
    assert form.status_code == 303 and form.headers["Location"].endswith(
        "/account/files/box/in/letter.txt"
    )


def test_reports_in_dutch(world: dict[str, Any]) -> None:
    server = world["server"]
    client = logged_in(server, "alice")
    response = client.get(f"/account/links/{world['drop_id']}?format=pdf&lang=nl")
    text = flat(pdf_text(response.content))
    assert f"Afleverrapport van link {world['drop_id']}" in text
    assert "Recht afgeven (alleen uploaden)" in text and "Status actief" in text
    assert "Bestanden geplaatst 2" in text
    assert "geplaatst: upload via WebDAV" in text and "Pagina 1 van 1" in text
    assert "Delivery report" not in text and "placed:" not in text
    page = client.get("/account/links")  # the language stays chosen (cookie)
    assert "Uw links" in page.text and "ingetrokken" in page.text


def test_viewing_a_report_is_recorded(world: dict[str, Any]) -> None:
    server = world["server"]
    client = logged_in(server, "alice")
    before = json.loads(
        server.cli("audit", "query", "--event", "report-viewed", "--format", "json").stdout
    )
    assert client.get(f"/account/links/{world['read_id']}?format=pdf", headers=ALICE_AT).ok
    after = json.loads(
        server.cli("audit", "query", "--event", "report-viewed", "--format", "json").stdout
    )
    assert len(after) == len(before) + 1
    record = after[-1]
    assert (record["actor"], record["report"], record["format"]) == ("alice", "link", "pdf")
    assert record["link_id"] == world["read_id"] and record["client"] == "192.0.2.44"
    assert server.cli("audit", "verify").returncode == 0


def test_no_report_is_shown_that_cannot_be_recorded(world: dict[str, Any]) -> None:
    server = world["server"]
    client = logged_in(server, "alice")
    with sqlite3.connect(server.data_dir / "davbox.db") as connection:
        connection.execute(
            "CREATE TRIGGER audit_off BEFORE INSERT ON audit_records"
            " BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"
        )
    try:
        response = client.get(f"/account/links/{world['read_id']}?format=pdf")
        assert response.status_code == 503
        assert "The audit trail cannot record this now." in response.text
        assert not response.content.startswith(b"%PDF") and "198.51.100.23" not in response.text
        result = server.cli("report", "link", str(world["read_id"]), check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert "no report is made while it cannot be recorded" in result.stderr
    finally:
        with sqlite3.connect(server.data_dir / "davbox.db") as connection:
            connection.execute("DROP TRIGGER audit_off")
    assert client.get(f"/account/links/{world['read_id']}").status_code == 200


# -- who may see what --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "what", "status"),
    [
        pytest.param("alice", "drop", 200, id="creator-sees-her-link"),
        pytest.param("root", "drop", 200, id="administrator-sees-any-link"),
        pytest.param("bob", "drop", 404, id="member-not-creator-404"),
        pytest.param("carol", "drop", 404, id="stranger-404"),
        pytest.param("dave", "drop", 404, id="manager-of-another-mailbox-404"),
        pytest.param("carol", "missing", 404, id="no-such-link-404"),
        pytest.param("alice", "file", 200, id="manager-sees-a-file"),
        pytest.param("bob", "bobs-file", 200, id="who-placed-a-file-sees-it"),
        pytest.param("bob", "file", 404, id="member-not-placer-404"),
        pytest.param("carol", "file", 404, id="stranger-file-404"),
        pytest.param("carol", "no-file", 404, id="no-such-file-404"),
    ],
)
def test_who_may_see_a_report(world: dict[str, Any], user: str, what: str, status: int) -> None:
    server = world["server"]
    paths = {
        "drop": f"/account/links/{world['drop_id']}",
        "missing": "/account/links/999",
        "file": "/account/files/box/in/letter.txt",
        "bobs-file": "/account/files/box/in/bob.txt",
        "no-file": "/account/files/box/in/none.txt",
    }
    client = logged_in(server, user)
    for suffix in ("", "?format=pdf"):
        response = client.get(paths[what] + suffix)
        assert response.status_code == status, (user, what, suffix)
        if status == 404:
            # The same page as for something that does not exist: nothing to probe.
            assert response.text == client.get("/account/links/999" + suffix).text
            assert "203.0.113.7" not in response.text


def test_reports_need_a_login(world: dict[str, Any]) -> None:
    client = WebClient(world["server"])
    for path in ("/account/links", f"/account/links/{world['drop_id']}", "/account/files/box/x"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["Location"].endswith("/login")


# -- command line --------------------------------------------------------------------------------


def test_cli_link_report_table_json_and_pdf(world: dict[str, Any], tmp_path: Path) -> None:
    server = world["server"]
    read_id = world["read_id"]
    table = server.cli("report", "link", str(read_id)).stdout
    assert "Created by: alice" in table and "fetched: 3  bytes sent: " in table
    assert "198.51.100.23" in table and "agent=CourierClient/1.0" in table
    data = json.loads(server.cli("report", "link", str(read_id), "--format", "json").stdout)
    fetched = [e for e in data["events"] if e["category"] == "fetched"]
    assert sorted((e["kind"], e["size"], e["whole"], e["client"]) for e in fetched) == [
        ("download", 10, False, "198.51.100.23"),
        ("download", len(LETTER), True, "198.51.100.23"),
        ("link-downloaded", len(LETTER), True, "198.51.100.23"),
    ]
    times = [e["time"] for e in data["events"]]
    assert times == sorted(times)
    assert data["link"]["created_by"] == "alice" and data["state"] == "active"
    out = tmp_path / "report.pdf"
    server.cli("report", "link", str(read_id), "--pdf", str(out), "--lang", "nl")
    text = flat(pdf_text(out.read_bytes()))
    assert f"Afleverrapport van link {read_id}" in text and PUBLIC_URL in text
    assert "198.51.100.23" in text and "CourierClient/1.0" in text
    missing = server.cli("report", "link", "999", check=False)
    assert missing.returncode == 1 and "there is no link 999" in missing.stderr
    viewed = json.loads(
        server.cli(
            "audit", "query", "--event", "report-viewed", "--actor", "admin", "--format", "json"
        ).stdout
    )
    assert {r["format"] for r in viewed if r["link_id"] == read_id} >= {"table", "json", "pdf"}


def test_cli_file_report_and_links_overview(world: dict[str, Any], tmp_path: Path) -> None:
    server = world["server"]
    table = server.cli("report", "file", "box/in/scan.bin").stdout
    assert "placed: 1  fetched: 0" in table
    assert (
        "203.0.113.7" in table and f"link-{world['drop_id']}" in table and str(len(SCAN)) in table
    )
    out = tmp_path / "file.pdf"
    server.cli("report", "file", "box/in/scan.bin", "--pdf", str(out))
    assert "ScanStation/2.1" in flat(pdf_text(out.read_bytes()))
    none = server.cli("report", "file", "box/in/none.txt", check=False)
    assert none.returncode == 1 and "nothing about box/in/none.txt" in none.stderr
    overview = json.loads(server.cli("report", "links", "alice", "--format", "json").stdout)
    counts = {
        item["link"]["id"]: (item["state"], item["uploads"], item["downloads"])
        for item in overview["links"]
    }
    assert counts == {
        world["drop_id"]: ("active", 2, 0),
        world["read_id"]: ("active", 0, 3),
        world["idle_id"]: ("revoked", 0, 0),
    }
    assert server.cli("report", "links", "bob").stdout.splitlines() == [
        "id  target  permission  state  placed  fetched  bytes  last used"
    ]
    nobody = server.cli("report", "links", "nobody", check=False)
    assert nobody.returncode == 1 and "no user named 'nobody'" in nobody.stderr
