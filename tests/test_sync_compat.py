"""The ownCloud/Nextcloud server surface, request by request (the real clients are in
test_sync_clients.py): status.php, capabilities and user in JSON and XML, oc:
properties, ids across overwrite and move, checksums, chunked upload, refusals.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import requests

from tests.davserver import PASSWORD, DavboxServer

CONFIG = """
policies:
  - name: small-files
    type: size
    mailboxes: ["small*"]
    max_file_size: 1MB
"""
OC = "{http://owncloud.org/ns}"
PROPS = (
    '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
    "<d:prop><d:getetag/><oc:id/><oc:fileid/><oc:permissions/><oc:size/><oc:checksums/>"
    "<oc:owner-id/></d:prop></d:propfind>"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    config = tmp_path_factory.mktemp("cfg") / "davbox.yaml"
    config.write_text(CONFIG)
    srv = DavboxServer(tmp_path_factory.mktemp("compat") / "data", config=config).start()
    srv.add_user("eva")
    srv.add_user("rob")
    srv.mailbox("box", eva="member", rob="reader")
    srv.mailbox("small", eva="member")
    yield srv
    srv.stop()


EVA = ("eva", PASSWORD)


def files_url(server: DavboxServer, path: str = "", user: str = "eva") -> str:
    return f"{server.url}/remote.php/dav/files/{user}/{path.lstrip('/')}"


def props(server: DavboxServer, path: str, auth=EVA, depth: str = "0") -> dict[str, dict]:
    answer = requests.request(
        "PROPFIND", files_url(server, path, auth[0]), data=PROPS, auth=auth,
        headers={"Depth": depth, "Content-Type": "application/xml"}, timeout=10,
    )  # fmt: skip
    assert answer.status_code == 207, answer.text
    assert answer.headers["Content-Type"].startswith("application/xml")
    found = {}
    for response in ET.fromstring(answer.content).iter("{DAV:}response"):
        href = response.findtext("{DAV:}href")
        values: dict = {}
        for propstat in response.iter("{DAV:}propstat"):
            if "200" not in (propstat.findtext("{DAV:}status") or ""):
                continue
            for prop in propstat.find("{DAV:}prop"):
                checksum = prop.find(f"{OC}checksum")
                values[prop.tag] = checksum.text if checksum is not None else prop.text
        found[href] = values
    return found


def one(server: DavboxServer, path: str, auth=EVA) -> dict:
    [values] = props(server, path, auth).values()
    return values


def test_status_capabilities_and_user_in_json_and_xml(server):
    status = requests.get(f"{server.url}/status.php", timeout=10)
    assert status.status_code == 200
    data = status.json()
    assert data["installed"] is True and data["productname"] == "davbox"
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", data["version"])
    caps = requests.get(
        f"{server.url}/ocs/v1.php/cloud/capabilities?format=json", auth=EVA, timeout=10
    ).json()["ocs"]["data"]["capabilities"]
    assert caps["dav"]["chunking"] == "1.0" and caps["core"]["webdav-root"] == "remote.php/webdav"
    assert "SHA1" in caps["checksums"]["supportedTypes"]
    assert caps["files"]["bigfilechunking"] is False, "no ownCloud chunking is advertised"
    xml = requests.get(f"{server.url}/ocs/v2.php/cloud/capabilities", timeout=10)
    assert xml.status_code == 200 and xml.headers["Content-Type"].startswith("application/xml")
    assert ET.fromstring(xml.content).findtext("data/capabilities/dav/chunking") == "1.0"
    user = requests.get(
        f"{server.url}/ocs/v2.php/cloud/user?format=json", auth=EVA, timeout=10
    ).json()["ocs"]["data"]
    assert user["id"] == "eva" and user["display-name"]
    assert requests.get(f"{server.url}/ocs/v2.php/cloud/user", timeout=10).status_code == 401


def test_the_same_tree_under_every_webdav_name(server):
    requests.put(server.dav("box/same.txt"), data=b"same", auth=EVA, timeout=10)
    for url in (server.dav("box/same.txt"), f"{server.url}/remote.php/webdav/box/same.txt",
                files_url(server, "box/same.txt")):  # fmt: skip
        assert requests.get(url, auth=EVA, timeout=10).content == b"same"
    listing = props(server, "box/", depth="1")
    assert all(href.startswith("/remote.php/dav/files/eva/box/") for href in listing)
    assert next(iter(listing)) == "/remote.php/dav/files/eva/box/", "the folder first"
    other = requests.request("PROPFIND", files_url(server, "box/", "rob"), auth=EVA, timeout=10)
    assert other.status_code == 403, "another account's tree"


def test_ids_stay_across_overwrite_and_move_and_permissions_follow_roles(server):
    requests.put(files_url(server, "box/keep.txt"), data=b"one", auth=EVA, timeout=10)
    before = one(server, "box/keep.txt")
    fileid = before[f"{OC}fileid"]
    assert before[f"{OC}id"].startswith(f"{int(fileid):08d}oc")
    requests.put(files_url(server, "box/keep.txt"), data=b"two!", auth=EVA, timeout=10)
    after = one(server, "box/keep.txt")
    assert after[f"{OC}fileid"] == fileid, "an overwrite keeps the id"
    assert after["{DAV:}getetag"] != before["{DAV:}getetag"]
    requests.request("MKCOL", files_url(server, "box/moved"), auth=EVA, timeout=10)
    folder_etag = one(server, "box/")["{DAV:}getetag"]
    moved = requests.request(
        "MOVE", files_url(server, "box/keep.txt"), auth=EVA, timeout=10,
        headers={"Destination": files_url(server, "box/moved/kept.txt")},
    )  # fmt: skip
    assert moved.status_code == 201
    assert one(server, "box/moved/kept.txt")[f"{OC}fileid"] == fileid, "a move keeps the id"
    assert one(server, "box/")["{DAV:}getetag"] != folder_etag, "the folder above changed"
    copied = requests.request(
        "COPY", files_url(server, "box/moved/kept.txt"), auth=EVA, timeout=10,
        headers={"Destination": files_url(server, "box/copy.txt")},
    )  # fmt: skip
    assert copied.status_code == 201
    assert one(server, "box/copy.txt")[f"{OC}fileid"] != fileid, "a copy is a new file"

    assert one(server, "box/copy.txt")[f"{OC}permissions"] == "GDNVW"
    assert one(server, "box/")[f"{OC}permissions"] == "GCK", "a mailbox's top stays"
    assert one(server, "box/moved/")[f"{OC}permissions"] == "GDNVCK"
    rob = ("rob", PASSWORD)
    assert one(server, "box/copy.txt", rob)[f"{OC}permissions"] == "G"
    assert one(server, "box/copy.txt")[f"{OC}size"] == "4"


def test_put_keeps_the_client_time_and_checks_its_checksum(server):
    data = b"checked content\n"
    sha1 = hashlib.sha1(data).hexdigest()
    good = requests.put(
        files_url(server, "box/sum.txt"), data=data, auth=EVA, timeout=10,
        headers={"OC-Checksum": f"SHA1:{sha1}", "X-OC-Mtime": "1600000000"},
    )  # fmt: skip
    assert good.status_code == 201 and good.headers["X-OC-MTime"] == "accepted"
    assert good.headers["OC-FileId"] == one(server, "box/sum.txt")[f"{OC}id"]
    assert good.headers["OC-ETag"] == good.headers["ETag"]
    values = one(server, "box/sum.txt")
    md5 = hashlib.md5(data).hexdigest()
    assert values[f"{OC}checksums"] == f"SHA1:{sha1} MD5:{md5}"
    head = requests.head(files_url(server, "box/sum.txt"), auth=EVA, timeout=10)
    assert head.headers["Last-Modified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    assert head.headers["ETag"] == good.headers["ETag"], "PUT's ETag is the next one"

    bad = requests.put(
        files_url(server, "box/sum.txt"), data=b"other bytes", auth=EVA, timeout=10,
        headers={"OC-Checksum": f"SHA1:{sha1}"},
    )  # fmt: skip
    assert bad.status_code == 400 and "checksum" in bad.text
    assert requests.get(files_url(server, "box/sum.txt"), auth=EVA, timeout=10).content == data
    odd = requests.put(
        files_url(server, "box/odd.txt"), data=b"x", auth=EVA, timeout=10,
        headers={"OC-Checksum": "CRC64:abc"},
    )  # fmt: skip
    assert odd.status_code == 400
    assert requests.get(files_url(server, "box/odd.txt"), auth=EVA, timeout=10).status_code == 404


def test_chunked_upload_is_one_judged_upload(server):
    uploads = f"{server.url}/remote.php/dav/uploads/eva"
    data = os.urandom(3 * 1000 * 1000)
    target = files_url(server, "box/chunked.bin")
    assert requests.request("MKCOL", f"{uploads}/t1", auth=EVA, timeout=10,
                            headers={"Destination": target}).status_code == 201  # fmt: skip
    for number, start in enumerate(range(0, len(data), 1_000_000), 1):
        piece = requests.put(f"{uploads}/t1/{number:05d}", data=data[start : start + 1_000_000],
                             auth=EVA, timeout=10, headers={"Destination": target})  # fmt: skip
        assert piece.status_code == 201
    listing = requests.request("PROPFIND", f"{uploads}/t1", auth=EVA, headers={"Depth": "1"},
                               timeout=10).text  # fmt: skip
    assert (
        listing.count("<ns0:getcontentlength>1000000<") + listing.count("getcontentlength>1000000<")
        >= 3
    )
    done = requests.request(
        "MOVE", f"{uploads}/t1/.file", auth=EVA, timeout=30,
        headers={"Destination": target, "OC-Total-Length": str(len(data))},
    )  # fmt: skip
    assert done.status_code == 201 and done.headers["OC-FileId"]
    assert requests.get(target, auth=EVA, timeout=30).content == data
    assert requests.request("PROPFIND", f"{uploads}/t1", auth=EVA, timeout=10).status_code == 404
    uploaded = server.cli("audit", "query", "--event", "upload", "--path", "/chunked.bin").stdout
    assert "chunked.bin" in uploaded, "the assembled file is one upload record"

    # A destination the size rule refuses is refused before any piece is sent.
    small = files_url(server, "small/big.bin")
    refused = requests.request(
        "MKCOL", f"{uploads}/t2", auth=EVA, timeout=10,
        headers={"Destination": small, "OC-Total-Length": "5000000"},
    )  # fmt: skip
    assert refused.status_code == 413 and "larger than 1 MB" in refused.text
    # Without a declared destination, the final PUT judges it: nothing is stored.
    assert requests.request("MKCOL", f"{uploads}/t3", auth=EVA, timeout=10).status_code == 201
    for number in (1, 2):
        requests.put(f"{uploads}/t3/{number}", data=os.urandom(700_000), auth=EVA, timeout=10)
    final = requests.request("MOVE", f"{uploads}/t3/.file", auth=EVA, timeout=10,
                             headers={"Destination": small})  # fmt: skip
    assert final.status_code == 413
    assert requests.head(small, auth=EVA, timeout=10).status_code == 404
    # Someone else's upload id is someone else's.
    assert requests.request("PROPFIND", f"{server.url}/remote.php/dav/uploads/rob/t3",
                            auth=EVA, timeout=10).status_code == 403  # fmt: skip
    # More than announced is refused, stores nothing, and is recorded.
    assert requests.request("MKCOL", f"{uploads}/t4", auth=EVA, timeout=10).status_code == 201
    over = requests.put(f"{uploads}/t4/1", data=b"x" * 2000, auth=EVA, timeout=10,
                        headers={"OC-Total-Length": "1000"})  # fmt: skip
    assert over.status_code == 413 and "OC-Total-Length" in over.text
    listing = requests.request("PROPFIND", f"{uploads}/t4", auth=EVA, headers={"Depth": "1"},
                               timeout=10).text  # fmt: skip
    assert "getcontentlength" not in listing, "the refused piece was not kept"
    records = server.cli("audit", "query", "--format", "json", "--event", "access-refused").stdout
    refused = [r for r in json.loads(records) if r["actor"] == "eva"]
    assert any(r["rule"] == "chunked-upload" and r["status"] == 413 for r in refused)
    assert any(r["rule"] == "own-files-only" and r["status"] == 403 for r in refused)
    assert any(r["rule"] == "small-files" and r["status"] == 413 for r in refused)


def test_abandoned_chunked_uploads_are_swept(server):
    uploads = f"{server.url}/remote.php/dav/uploads/eva"
    assert requests.request("MKCOL", f"{uploads}/old", auth=EVA, timeout=10).status_code == 201
    requests.put(f"{uploads}/old/1", data=b"x" * 1000, auth=EVA, timeout=10)
    tmp = server.data_dir / "storage" / "tmp"
    [folder] = [p for p in tmp.iterdir() if ".chunks." in p.name and any(p.iterdir())]
    day_ago = time.time() - 2 * 86400
    os.utime(folder, (day_ago, day_ago))
    later = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 60))
    swept = server.cli("expiry", "housekeeping", "--now", later).stdout
    assert re.search(r"unfinished uploads\t[1-9]", swept), swept
    assert not folder.exists()
    assert requests.request("PROPFIND", f"{uploads}/old", auth=EVA, timeout=10).status_code == 404


def test_old_style_chunks_are_refused_not_stored_as_files(server):
    answer = requests.put(
        files_url(server, "box/report.pdf-chunking-4711-3-0"), data=b"piece", auth=EVA,
        headers={"OC-Chunked": "1"}, timeout=10,
    )  # fmt: skip
    assert answer.status_code == 400 and "OC-Chunked" in answer.text
    assert requests.head(files_url(server, "box/report.pdf-chunking-4711-3-0"), auth=EVA,
                         timeout=10).status_code == 404  # fmt: skip
