"""Files operating systems make for themselves (``._*``, ``.DS_Store``, ``Thumbs.db``,
``desktop.ini``): stored, hidden, refused or quietly discarded, by policy.

Drop links discard them by default, so a Finder or Explorer copy into a drop
box goes on without leaving them behind; every discard is an audit record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.davserver import PASSWORD, DavboxServer
from tests.test_link_dav import LOCK_BODY, share

CONFIG = """
policies:
  - name: hide-junk
    type: system_files
    mailboxes: ["hidden*"]
    action: hide
  - name: no-junk
    type: system_files
    mailboxes: ["strict*"]
    action: refuse
  - name: drop-junk
    type: system_files
    mailboxes: ["quiet*"]
    action: discard
"""
OWNER = ("owner", PASSWORD)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    config = tmp_path_factory.mktemp("cfg") / "davbox.yaml"
    config.write_text(CONFIG)
    srv = DavboxServer(tmp_path_factory.mktemp("junk") / "data", config=config).start()
    srv.add_user(*OWNER)
    for box in ("plain", "hidden", "strict", "quiet", "dropbox"):
        srv.mailbox(box, owner="manager")
    yield srv
    srv.stop()


def names(server: DavboxServer, box: str) -> set[str]:
    return {p.name for p in server.storage_dir(box).iterdir()}


def listed(server: DavboxServer, box: str) -> str:
    return requests.request(
        "PROPFIND", server.dav(f"{box}/"), headers={"Depth": "1"}, auth=OWNER, timeout=10
    ).text


def refusals(server: DavboxServer) -> list[dict]:
    out = server.cli("audit", "query", "--format", "json", "--event", "access-refused").stdout
    return json.loads(out)


def test_without_a_rule_they_are_files_like_any_other(server):
    put = requests.put(server.dav("plain/.DS_Store"), data=b"\0\0\0\1Bud1", auth=OWNER, timeout=10)
    assert put.status_code == 201
    assert ".DS_Store" in names(server, "plain") and ".DS_Store" in listed(server, "plain")


def test_hide_keeps_them_out_of_listings_only(server):
    for name in ("._report.pdf", "Thumbs.db", "report.pdf"):
        assert requests.put(server.dav(f"hidden/{name}"), data=b"x", auth=OWNER, timeout=10).ok
    assert names(server, "hidden") == {"._report.pdf", "Thumbs.db", "report.pdf"}
    listing = listed(server, "hidden")
    assert "report.pdf" in listing and "Thumbs.db" not in listing and "._report" not in listing
    got = requests.get(server.dav("hidden/Thumbs.db"), auth=OWNER, timeout=10)
    assert got.status_code == 200 and got.content == b"x", "asked for by name, it is there"


def test_refuse_answers_403_with_the_reason(server):
    answer = requests.put(server.dav("strict/desktop.ini"), data=b"[x]", auth=OWNER, timeout=10)
    assert answer.status_code == 403
    assert "'desktop.ini' is a file the operating system makes for itself" in answer.text
    assert names(server, "strict") == set()
    assert requests.put(server.dav("strict/notes.txt"), data=b"ok", auth=OWNER, timeout=10).ok


def test_discard_answers_stored_keeps_nothing_and_records_it(server):
    answer = requests.put(server.dav("quiet/._foto.jpg"), data=b"A" * 5000, auth=OWNER, timeout=10)
    assert answer.status_code == 201
    assert names(server, "quiet") == set()
    assert requests.get(server.dav("quiet/._foto.jpg"), auth=OWNER, timeout=10).status_code == 404
    record = [r for r in refusals(server) if r["path"] == "/._foto.jpg"]
    assert len(record) == 1
    assert record[0]["rule"] == "drop-junk" and record[0]["status"] == 201
    assert "operating system" in record[0]["reason"]


def test_a_finder_copy_into_a_drop_link_leaves_no_system_files(server):
    link = share(server, "dropbox", "drop")
    # Finder: LOCK the AppleDouble name, PUT it (chunked), UNLOCK; then the real file.
    lock = requests.request(
        "LOCK", link.url("._offerte.pdf"), data=LOCK_BODY,
        headers={"Content-Type": "application/xml", "Timeout": "Second-600"}, timeout=10,
    )  # fmt: skip
    assert lock.status_code in (200, 201), lock.text
    token = lock.headers["Lock-Token"]
    put = requests.put(
        link.url("._offerte.pdf"),
        data=iter([b"\0\5\26\7", b"\0" * 4000]),
        headers={"If": f"({token})", "X-Expected-Entity-Length": "4004"},
        timeout=10,
    )
    assert put.status_code == 201
    unlock = requests.request("UNLOCK", link.url("._offerte.pdf"), headers={"Lock-Token": token},
                              timeout=10)  # fmt: skip
    assert unlock.status_code == 204
    for name in (".DS_Store", "Thumbs.db"):
        assert requests.put(link.url(name), data=b"junk", timeout=10).status_code == 201
    real = requests.put(link.url("offerte.pdf"), data=b"%PDF-1.4 offerte", timeout=10)
    assert real.status_code == 201
    assert names(server, "dropbox") == {"offerte.pdf"}
    discarded = {r["path"] for r in refusals(server) if r["rule"] == "drop-link-system-files"}
    assert {"/._offerte.pdf", "/.DS_Store", "/Thumbs.db"} <= discarded


def test_hidden_system_files_stay_off_link_pages_and_zips(server):
    import io
    import zipfile

    from tests.test_link_pages import LinkClient, make_link

    for name in ("desktop.ini", "plan.txt"):
        assert requests.put(server.dav(f"hidden/{name}"), data=b"y", auth=OWNER, timeout=10).ok
    _link, token = make_link(server, "hidden", "/", "read")
    client = LinkClient(server)
    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    assert "plan.txt" in page.text and "desktop.ini" not in page.text
    assert "Thumbs.db" not in page.text
    archive = client.get(f"/s/{token}/zip")
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        names = {n.rpartition("/")[2] for n in zipped.namelist()}
    assert "plan.txt" in names and "desktop.ini" not in names and "Thumbs.db" not in names
