"""The OCS share API for links (what Nextcloud/ownCloud clients use), against a real server.

One server for the module: ann manages ``box`` and ``strict`` (where a
``links`` policy wants a password and at most 14 days), bob is a member of
``box`` (no share right), eve its dropper, frank a second manager of ``box``,
dan manages only ``other``, and carol is under two-factor login.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.davserver import PASSWORD, DavboxServer

SHARES = "/apps/files_sharing/api/v1/shares"
OCS = {"OCS-APIRequest": "true"}
APP = re.compile(r"\(shown once\): (\S+)")
CONFIG = """
auth:
  two_factor_for: [carol]
policies:
  - type: links
    name: strict-links
    mailboxes: [strict]
    require_password: true
    max_expiry: 14d
"""

ANN = ("ann", PASSWORD)
BOB = ("bob", PASSWORD)
DAN = ("dan", PASSWORD)
EVE = ("eve", PASSWORD)
FRANK = ("frank", PASSWORD)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    root = tmp_path_factory.mktemp("ocs")
    config = root / "config.yaml"
    config.write_text(CONFIG)
    srv = DavboxServer(root / "data", config=config).start()
    for name in ("ann", "bob", "carol", "dan", "eve", "frank"):
        srv.add_user(name)
    srv.mailbox("box", ann="manager", bob="member", eve="dropper", frank="manager")
    srv.mailbox("strict", ann="manager")
    srv.mailbox("other", dan="manager")
    srv.mailbox("tfa", carol="manager")
    for path in ("box/docs", "box/docs/sub", "box/inbox", "box/team", "strict/out"):
        assert dav(srv, "MKCOL", path) == 201
    assert dav(srv, "PUT", "box/docs/a.txt", b"hello") == 201
    assert dav(srv, "PUT", "box/report.pdf", b"%PDF-1.4") == 201
    yield srv
    srv.stop()


def dav(srv: DavboxServer, method: str, path: str, body: bytes | None = None, auth=ANN) -> int:
    return requests.request(method, srv.dav(path), data=body, auth=auth, timeout=10).status_code


def ocs(
    srv: DavboxServer,
    method: str,
    path: str = "",
    *,
    auth=ANN,
    version: int = 2,
    fmt: str = "json",
    data: dict | None = None,
    params: dict | None = None,
    headers: dict | None = None,
) -> requests.Response:
    query = dict(params or {})
    if fmt == "json":
        query["format"] = "json"
    return requests.request(
        method,
        f"{srv.url}/ocs/v{version}.php{SHARES}{path}",
        params=query,
        data=data,
        auth=auth,
        headers=OCS if headers is None else headers,
        timeout=10,
    )


def meta(response: requests.Response) -> dict:
    return response.json()["ocs"]["meta"]


def created(srv: DavboxServer, auth=ANN, **fields) -> dict:
    response = ocs(srv, "POST", auth=auth, data={"shareType": 3, **fields})
    assert response.status_code == 200, response.text
    return response.json()["ocs"]["data"]


def propfind(url: str, auth=None) -> int:
    return requests.request(
        "PROPFIND", url, headers={"Depth": "1"}, auth=auth, timeout=10
    ).status_code


def day(days: int) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


def test_read_link_in_json_opens_over_webdav(server):
    share = created(server, path="/box/docs", permissions=1, label="Docs", note="Read me")
    assert share["share_type"] == 3 and share["permissions"] == 1
    assert share["path"] == "/box/docs" and share["file_target"] == "/docs"
    assert share["item_type"] == "folder" and share["mimetype"] == "httpd/unix-directory"
    assert share["uid_owner"] == "ann" and share["displayname_owner"] == "ann"
    assert share["label"] == "Docs" and share["note"] == "Read me"
    assert share["expiration"] is None and share["share_with"] is None
    assert share["url"] == f"{server.url}/s/{share['token']}"
    assert isinstance(share["stime"], int) and share["id"].isdigit()
    assert "password" not in share

    listing = requests.request(
        "PROPFIND", share["url"] + "/dav/", headers={"Depth": "1"}, timeout=10
    )
    assert listing.status_code == 207 and "a.txt" in listing.text
    got = requests.get(share["url"] + "/dav/a.txt", timeout=10)
    assert got.status_code == 200 and got.content == b"hello"
    assert requests.put(share["url"] + "/dav/x.txt", data=b"x", timeout=10).status_code == 403


def test_read_link_to_a_file(server):
    share = created(server, path="/box/report.pdf")  # no permissions: read
    assert share["item_type"] == "file" and share["mimetype"] == "application/pdf"
    assert share["permissions"] == 1 and share["file_target"] == "/report.pdf"
    got = requests.get(share["url"] + "/dav/", timeout=10)
    assert got.status_code == 200 and got.content == b"%PDF-1.4"


def test_drop_link_in_xml_takes_uploads(server):
    response = ocs(
        server,
        "POST",
        fmt="xml",
        data={"path": "/box/inbox", "shareType": "3", "permissions": "4"},
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    root = ET.fromstring(response.content)
    assert root.findtext("meta/status") == "ok" and root.findtext("meta/statuscode") == "200"
    assert root.findtext("data/permissions") == "4" and root.findtext("data/share_type") == "3"
    assert root.find("data/expiration").text is None  # an empty element, as Nextcloud
    url = root.findtext("data/url")
    assert url == f"{server.url}/s/{root.findtext('data/token')}"

    assert requests.put(url + "/dav/upload.txt", data=b"dropped", timeout=10).status_code == 201
    got = requests.get(server.dav("box/inbox/upload.txt"), auth=ANN, timeout=10)
    assert got.status_code == 200 and got.content == b"dropped"
    assert requests.get(url + "/dav/upload.txt", timeout=10).status_code in (403, 404)


@pytest.mark.parametrize("bits", [15, 31], ids=["15", "31-as-clients-send"])
def test_write_link(server, bits):
    share = created(server, path="/box/team", permissions=bits)
    assert share["permissions"] == 15
    url = share["url"] + f"/dav/w{bits}.txt"
    assert requests.put(url, data=b"w", timeout=10).status_code == 201
    assert requests.get(url, timeout=10).content == b"w"
    assert requests.delete(url, timeout=10).status_code == 204


def test_public_upload_flag_means_write(server):
    share = created(server, path="/box/team", publicUpload="true")
    assert share["permissions"] == 15


def test_list_filter_and_get_one(server):
    docs = created(server, path="/box/docs", label="list-docs")
    sub = created(server, path="/box/docs/sub", label="list-sub")
    mine = ocs(server, "GET").json()["ocs"]["data"]
    ids = {share["id"] for share in mine}
    assert {docs["id"], sub["id"]} <= ids
    assert all(share["uid_owner"] == "ann" for share in mine)

    on_docs = ocs(server, "GET", params={"path": "/box/docs"}).json()["ocs"]["data"]
    assert docs["id"] in {s["id"] for s in on_docs}
    assert all(share["path"] == "/box/docs" for share in on_docs)
    inside = ocs(server, "GET", params={"path": "/box/docs", "subfiles": "true"})
    assert {s["path"] for s in inside.json()["ocs"]["data"]} == {"/box/docs/sub"}
    with_me = ocs(server, "GET", params={"shared_with_me": "true"})
    assert with_me.json()["ocs"]["data"] == []
    assert ocs(server, "GET", params={"path": "/other/x"}).status_code == 404

    one = ocs(server, "GET", f"/{docs['id']}")
    assert one.status_code == 200
    assert [s["id"] for s in one.json()["ocs"]["data"]] == [docs["id"]]
    xml = ET.fromstring(ocs(server, "GET", f"/{docs['id']}", fmt="xml").content)
    assert [e.findtext("id") for e in xml.findall("data/element")] == [docs["id"]]


def test_delete_revokes_the_link_at_once(server):
    share = created(server, path="/box/docs")
    assert propfind(share["url"] + "/dav/") == 207
    deleted = ocs(server, "DELETE", f"/{share['id']}")
    assert deleted.status_code == 200 and deleted.json()["ocs"]["data"] == []
    assert propfind(share["url"] + "/dav/") == 404
    assert ocs(server, "GET", f"/{share['id']}").status_code == 404
    again = ocs(server, "DELETE", f"/{share['id']}")
    assert (
        again.status_code == 404 and meta(again)["message"] == "Wrong share ID, share doesn't exist"
    )
    assert share["id"] not in {s["id"] for s in ocs(server, "GET").json()["ocs"]["data"]}


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        pytest.param({"permissions": 7}, 400, "use 1 (read), 4 (upload only", id="permissions-7"),
        pytest.param({"permissions": "x"}, 400, "use 1 (read)", id="permissions-text"),
        pytest.param({"shareType": 0, "shareWith": "bob"}, 403, "public links only", id="user"),
        pytest.param({"shareType": 4}, 403, "public links only", id="email"),
        pytest.param({"shareType": ""}, 400, "give shareType=3", id="no-type"),
        pytest.param({"path": "/box/nothing"}, 404, "there is no file or folder", id="no-path"),
        pytest.param({"path": "/nobox/x"}, 404, "you have no mailbox 'nobox'", id="no-box"),
        pytest.param({"path": ""}, 404, "specify a file or folder path", id="empty"),
        pytest.param(
            {"path": "/box/report.pdf", "permissions": 4}, 400, "needs a folder", id="drop-file"
        ),
        pytest.param({"expireDate": "31.12.2030"}, 400, "YYYY-MM-DD", id="bad-date"),
        pytest.param({"expireDate": day(-1)}, 400, "in the past", id="past-date"),
        pytest.param({"password": "short"}, 400, "link password", id="weak-password"),
        pytest.param({"hideDownload": "true"}, 400, "cannot hide downloads", id="hide-download"),
    ],
)
def test_refused_requests_say_why(server, fields, status, message):
    data = {"path": "/box/docs", "shareType": 3, **fields}
    response = ocs(server, "POST", data=data)
    assert response.status_code == status
    assert meta(response)["status"] == "failure" and meta(response)["statuscode"] == status
    assert message in meta(response)["message"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({}, "links in mailbox 'strict' need a password", id="no-password"),
        pytest.param(
            {"password": "a-long-link-password"}, "must expire within 14d", id="no-expiry"
        ),
        pytest.param(
            {"password": "a-long-link-password", "expireDate": day(30)},
            "must expire within 14d",
            id="too-late",
        ),
    ],
)
def test_links_policy_refusals_carry_the_reason(server, fields, message):
    data = {"path": "/strict/out", "shareType": 3, **fields}
    v2 = ocs(server, "POST", data=data)
    assert v2.status_code == 403 and meta(v2)["statuscode"] == 403
    assert message in meta(v2)["message"]
    v1 = ocs(server, "POST", data=data, version=1)
    assert v1.status_code == 200 and meta(v1)["statuscode"] == 403
    assert message in meta(v1)["message"]


def test_max_expiry_14d_takes_dates_up_to_13_days_out(server):
    data = {"path": "/strict/out", "shareType": 3, "password": "a-long-link-password"}
    assert ocs(server, "POST", data={**data, "expireDate": day(13)}).status_code == 200
    refused = ocs(server, "POST", data={**data, "expireDate": day(14)})
    assert refused.status_code == 403 and "within 14d" in meta(refused)["message"]


def test_expire_date_is_the_last_day_and_passwords_are_never_shown(server):
    password = "a-long-link-password"
    share = created(server, path="/strict/out", password=password, expireDate=day(7))
    assert share["expiration"] == f"{day(7)} 00:00:00"
    assert share["share_with"] and password not in str(share)
    today = created(server, path="/strict/out", password=password, expireDate=day(0))
    assert today["expiration"] == f"{day(0)} 00:00:00"
    assert propfind(today["url"] + "/dav/", auth=("x", password)) == 207  # works all day
    assert propfind(share["url"] + "/dav/") == 401
    assert propfind(share["url"] + "/dav/", auth=("x", "wrong-password")) == 401
    assert propfind(share["url"] + "/dav/", auth=("x", password)) == 207


def test_update_with_put(server):
    share = created(server, path="/box/docs", label="before")
    url = f"/{share['id']}"
    changed = ocs(server, "PUT", url, data={"label": "after", "note": "new note"})
    assert changed.status_code == 200, changed.text
    data = changed.json()["ocs"]["data"]
    assert data["label"] == "after" and data["note"] == "new note" and data["id"] == share["id"]

    data = ocs(server, "PUT", url, data={"expireDate": day(3)}).json()["ocs"]["data"]
    assert data["expiration"] == f"{day(3)} 00:00:00"
    data = ocs(server, "PUT", url, data={"expireDate": ""}).json()["ocs"]["data"]
    assert data["expiration"] is None

    data = ocs(server, "PUT", url, data={"password": "another-long-password"}).json()
    assert data["ocs"]["data"]["share_with"]
    assert propfind(share["url"] + "/dav/") == 401
    assert propfind(share["url"] + "/dav/", auth=("x", "another-long-password")) == 207
    data = ocs(server, "PUT", url, data={"password": ""}).json()["ocs"]["data"]
    assert data["share_with"] is None and propfind(share["url"] + "/dav/") == 207

    data = ocs(server, "PUT", url, data={"permissions": 15}).json()["ocs"]["data"]
    assert data["permissions"] == 15
    assert requests.put(share["url"] + "/dav/put.txt", data=b"p", timeout=10).status_code == 201
    data = ocs(server, "PUT", url, data={"permissions": 1}).json()["ocs"]["data"]
    assert data["permissions"] == 1 and data["token"] == share["token"]

    bad = ocs(server, "PUT", url, data={"permissions": 2})
    assert bad.status_code == 400 and "use 1 (read)" in meta(bad)["message"]
    empty = ocs(server, "PUT", url, data={"unknown": "x"})
    assert (
        empty.status_code == 400 and meta(empty)["message"] == "Wrong or no update parameter given"
    )


def test_update_must_keep_the_policy(server):
    password = "a-long-link-password"
    share = created(server, path="/strict/out", password=password, expireDate=day(5))
    url = f"/{share['id']}"
    for data, message in [
        ({"password": ""}, "need a password"),
        ({"expireDate": ""}, "must expire within 14d"),
        ({"expireDate": day(20)}, "must expire within 14d"),
    ]:
        refused = ocs(server, "PUT", url, data=data)
        assert refused.status_code == 403 and message in meta(refused)["message"]
    assert propfind(share["url"] + "/dav/", auth=("x", password)) == 207  # unchanged


def test_members_without_the_share_right_are_refused(server):
    refused = ocs(server, "POST", auth=BOB, data={"path": "/box/docs", "shareType": 3})
    assert refused.status_code == 403
    assert "does not allow you to make share links" in meta(refused)["message"]
    # A dropper learns nothing about which names exist: the same answer either way.
    for path in ("/box/docs/a.txt", "/box/docs/no-such.txt"):
        answer = ocs(server, "POST", auth=EVE, data={"path": path, "shareType": 3})
        assert answer.status_code == 403
        assert "does not allow you to make share links" in meta(answer)["message"]


def test_others_cannot_see_change_or_delete_my_links(server):
    share = created(server, path="/box/docs", label="private")
    url = f"/{share['id']}"
    assert share["id"] not in {s["id"] for s in ocs(server, "GET", auth=DAN).json()["ocs"]["data"]}
    for method, data in [("GET", None), ("PUT", {"label": "x"}), ("DELETE", None)]:
        answer = ocs(server, method, url, auth=DAN, data=data)
        assert answer.status_code == 404, method
        assert meta(answer)["message"] == "Wrong share ID, share doesn't exist"
    # bob is a member of the mailbox, but neither made nor manages the link
    assert ocs(server, "DELETE", url, auth=BOB).status_code == 404
    assert ocs(server, "GET", "/999999").status_code == 404
    assert ocs(server, "GET", "/not-a-number").status_code == 404
    assert propfind(share["url"] + "/dav/") == 207


def test_a_second_manager_sees_links_with_reshares_and_may_revoke(server):
    share = created(server, path="/box/docs", label="ann's")
    plain = {s["id"] for s in ocs(server, "GET", auth=FRANK).json()["ocs"]["data"]}
    assert share["id"] not in plain  # without reshares: only frank's own links
    reshares = ocs(server, "GET", auth=FRANK, params={"reshares": "true", "path": "/box/docs"})
    assert share["id"] in {s["id"] for s in reshares.json()["ocs"]["data"]}
    assert ocs(server, "GET", f"/{share['id']}", auth=FRANK).status_code == 200
    assert ocs(server, "DELETE", f"/{share['id']}", auth=FRANK).status_code == 200
    assert propfind(share["url"] + "/dav/") == 404


def test_the_ocs_header_is_required(server):
    for auth in (ANN, ("ann", "wrong password")):
        response = ocs(server, "GET", auth=auth, headers={})
        assert response.status_code == 412
        assert "OCS-APIRequest: true" in meta(response)["message"]
    refused = ocs(server, "POST", headers={}, data={"path": "/box/docs", "shareType": 3})
    assert refused.status_code == 412
    assert ocs(server, "GET", headers={"OCS-APIRequest": "false"}).status_code == 412


def test_two_factor_accounts_need_an_app_password(server):
    refused = ocs(server, "GET", auth=("carol", PASSWORD))
    assert refused.status_code == 401 and meta(refused)["statuscode"] == 997
    assert "app password" in meta(refused)["message"]
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    made = server.cli("app-password", "create", "carol", "--label", "phone")
    app = ("carol", APP.search(made.stdout).group(1))
    assert dav(server, "MKCOL", "tfa/out", auth=app) == 201
    share = created(server, auth=app, path="/tfa/out")
    assert share["uid_owner"] == "carol"
    assert propfind(share["url"] + "/dav/") == 207


def test_read_only_app_passwords_may_look_but_not_change(server):
    made = server.cli(
        "app-password", "create", "ann", "--label", "ro", "--read-only", "--mailbox", "box"
    )
    ro = ("ann", APP.search(made.stdout).group(1))
    share = created(server, path="/box/docs", label="ro-test")
    strict = created(server, path="/strict/out", password="a-long-link-password", expireDate=day(2))
    visible = {s["id"] for s in ocs(server, "GET", auth=ro).json()["ocs"]["data"]}
    assert share["id"] in visible and strict["id"] not in visible  # outside its mailboxes
    assert ocs(server, "GET", f"/{strict['id']}", auth=ro).status_code == 404
    refused = ocs(server, "POST", auth=ro, data={"path": "/box/docs", "shareType": 3})
    assert refused.status_code == 403 and "may only read" in meta(refused)["message"]
    for method, data in [("DELETE", None), ("PUT", {"label": "x"})]:
        answer = ocs(server, method, f"/{share['id']}", auth=ro, data=data)
        assert answer.status_code == 403 and "may only read" in meta(answer)["message"]


def test_v1_and_v2_status_conventions(server):
    v1 = ocs(server, "POST", version=1, data={"path": "/box/docs", "shareType": 3})
    assert v1.status_code == 200
    assert meta(v1) == {
        "status": "ok",
        "statuscode": 100,
        "message": "OK",
        "totalitems": "",
        "itemsperpage": "",
    }
    v2 = ocs(server, "GET", "/" + v1.json()["ocs"]["data"]["id"])
    assert v2.status_code == 200 and meta(v2) == {
        "status": "ok",
        "statuscode": 200,
        "message": "OK",
    }

    missing_v1 = ocs(server, "GET", "/999999", version=1)
    assert missing_v1.status_code == 200 and meta(missing_v1)["statuscode"] == 404
    assert meta(missing_v1)["status"] == "failure"
    missing_v2 = ocs(server, "GET", "/999999")
    assert missing_v2.status_code == 404 and meta(missing_v2)["statuscode"] == 404

    for version in (1, 2):
        wrong = ocs(server, "GET", version=version, auth=("ann", "not the password"))
        assert wrong.status_code == 401 and meta(wrong)["statuscode"] == 997
        unknown = requests.get(
            f"{server.url}/ocs/v{version}.php/apps/nothing?format=json", headers=OCS, timeout=10
        )
        assert unknown.status_code == 404 and meta(unknown)["statuscode"] == 998
        no_method = ocs(server, "PATCH", "/1", version=version)
        assert no_method.status_code == 405 and "Allow" in no_method.headers


def test_missing_credentials_and_big_bodies(server):
    anonymous = ocs(server, "GET", auth=None)
    assert anonymous.status_code == 401 and meta(anonymous)["message"] == "authentication required"
    share = created(server, path="/box/docs")
    big = {"note": "n" * (100 * 1024)}
    refused = ocs(server, "PUT", f"/{share['id']}", data=big)
    assert refused.status_code == 413 and "64 KiB" in meta(refused)["message"]

    def chunks() -> Iterator[bytes]:
        yield b"note="
        for _ in range(100):
            yield b"n" * 1024

    chunked = requests.put(
        f"{server.url}/ocs/v2.php{SHARES}/{share['id']}?format=json",
        data=chunks(),
        auth=ANN,
        headers={**OCS, "Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert chunked.status_code == 413
    unchanged = ocs(server, "GET", f"/{share['id']}").json()["ocs"]["data"][0]
    assert unchanged["note"] == ""


def test_accept_header_chooses_json(server):
    response = requests.get(
        f"{server.url}/ocs/v2.php{SHARES}",
        auth=ANN,
        headers={**OCS, "Accept": "application/json"},
        timeout=10,
    )
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert meta(response)["statuscode"] == 200


def test_json_request_bodies(server):
    response = requests.post(
        f"{server.url}/ocs/v2.php{SHARES}?format=json",
        json={"path": "/box/docs", "shareType": 3, "permissions": 1, "label": "<b>json</b>"},
        auth=ANN,
        headers=OCS,
        timeout=10,
    )
    assert response.status_code == 200
    assert "<b>" not in response.text  # markup characters escaped, as PHP's JSON_HEX_TAG
    assert response.json()["ocs"]["data"]["label"] == "<b>json</b>"


def test_events_name_the_client_and_logs_hold_no_secrets(server):
    password = "an-event-link-password"
    share = created(server, path="/strict/out", password=password, expireDate=day(1))
    ocs(server, "PUT", f"/{share['id']}", data={"password": password + "-2"})
    ocs(server, "DELETE", f"/{share['id']}")
    log = server.log_text(until=rf"link-revoked .*link_id={share['id']}\b")
    link_id = share["id"]
    assert re.search(r"link-created .*actor='ann' .*client='127.0.0.1' .*mailbox='strict'", log)
    assert re.search(rf"link-revoked .*actor='ann' .*client='127.0.0.1' .*link_id={link_id}\b", log)
    assert re.search(
        rf"link-changed .*actor='ann' .*client='127.0.0.1' .*link_id={link_id} "
        r"changed=\('password',\)",
        log,
    )
    assert share["token"] not in log and password not in log


def test_throttled_logins_get_429(make_server, tmp_path):
    config = tmp_path / "throttle.yaml"
    config.write_text("auth:\n  two_factor_for: []\n  throttle_account_failures: 2\n")
    srv = make_server("throttle", config=config)
    srv.add_user("mallory")
    statuses = [ocs(srv, "GET", auth=("mallory", f"guess-{n}")).status_code for n in range(4)]
    assert statuses[0] == 401 and statuses[-1] == 429
    throttled = ocs(srv, "GET", auth=("mallory", PASSWORD))
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert "too many failed logins" in meta(throttled)["message"]


def test_public_url_makes_the_link_url(make_server, tmp_path):
    config = tmp_path / "public.yaml"
    config.write_text("server:\n  public_url: https://files.example.org/\n")
    srv = make_server("public", config=config)
    srv.add_user("pat")
    srv.mailbox("out", pat="manager")
    share = created(srv, auth=("pat", PASSWORD), path="/out")
    assert share["url"] == f"https://files.example.org/s/{share['token']}"
    odd = requests.post(
        f"{srv.url}/ocs/v2.php{SHARES}?format=json",
        data=b"<x/>",
        auth=("pat", PASSWORD),
        headers={**OCS, "Content-Type": "application/xml"},
        timeout=10,
    )
    assert odd.status_code == 415 and "form-encoded or as JSON" in meta(odd)["message"]
