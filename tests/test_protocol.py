"""WebDAV at the edges: OPTIONS, Depth, malformed input, persistence, credential changes."""

from __future__ import annotations

import re
import socket
import time
import unicodedata
from urllib.parse import quote

import pytest
import requests

from davbox import accounts
from tests.davserver import PASSWORD

LOCK_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    b"<D:owner>persist</D:owner></D:lockinfo>"
)


@pytest.fixture(scope="module")
def box(shared_server):
    shared_server.add_user("proto")
    shared_server.mailbox("proto", proto="member")
    return shared_server


AUTH = ("proto", PASSWORD)


def raw_request(server, request: bytes) -> bytes:
    """Send bytes as they are (no client-side quoting) and return the raw response."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


def test_options_on_server_root_announces_dav(box):
    response = requests.options(box.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["DAV"].replace(" ", "") == "1,2"
    assert response.headers["MS-Author-Via"] == "DAV"


@pytest.mark.parametrize("depth", ["infinity", None])
def test_propfind_depth_infinity_is_refused(box, depth):
    headers = {"Depth": depth} if depth else {}
    response = requests.request(
        "PROPFIND", box.dav("proto/"), headers=headers, auth=AUTH, timeout=10
    )
    assert response.status_code == 403
    assert "propfind-finite-depth" in response.text


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic", id="no-credentials"),
        pytest.param("Basic !!!notbase64", id="not-base64"),
        pytest.param("Basic " + "bm9jb2xvbg==", id="no-colon"),
        pytest.param("Basic /w==", id="not-utf8"),
        pytest.param("Digest username=x", id="other-scheme"),
        pytest.param("Bearer abc", id="bearer"),
        pytest.param("Basic " + "a" * 10000, id="huge"),
    ],
)
def test_malformed_authorization_gets_401(box, header):
    response = requests.request(
        "PROPFIND", box.dav("proto/"), headers={"Authorization": header, "Depth": "0"}, timeout=10
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="davbox"')


def test_wrong_password_and_unknown_user_get_the_same_answer(box):
    wrong = requests.get(box.dav("proto/"), auth=("proto", "nope-nope-nope"), timeout=10)
    unknown = requests.get(box.dav("proto/"), auth=("nobody-here", "nope-nope-nope"), timeout=10)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.text == unknown.text


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        pytest.param(b"/dav/proto/%FF%FE.txt", b"not valid UTF-8", id="invalid-utf8"),
        pytest.param(b"/dav/proto/a%01b.txt", b"control characters", id="control-char"),
        pytest.param(b"/dav/proto/a%00b.txt", b"control characters", id="nul"),
    ],
)
def test_malformed_paths_get_400(box, path, reason):
    response = raw_request(
        box,
        b"PUT " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    )
    assert response.startswith(b"HTTP/1.1 400 "), response[:200]
    assert reason in response


def test_dot_dot_cannot_escape_the_mailbox(box):
    response = raw_request(
        box,
        b"GET /dav/proto/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Basic " + _basic(*AUTH) + b"\r\n\r\n",
    )
    assert not response.startswith(b"HTTP/1.1 200"), response[:200]
    assert b"root:" not in response


def _basic(user: str, password: str) -> bytes:
    import base64

    return base64.b64encode(f"{user}:{password}".encode())


def test_top_level_is_read_only(box):
    assert requests.put(box.dav("stray.txt"), data=b"x", auth=AUTH, timeout=10).status_code == 403
    mkcol = requests.request("MKCOL", box.dav("newbox"), auth=AUTH, timeout=10)
    assert mkcol.status_code == 403
    assert "only lists your mailboxes" in mkcol.text


def test_non_member_cannot_learn_a_mailbox_exists(box):
    box.add_user("stranger")
    hidden = requests.request(
        "PROPFIND",
        box.dav("proto/"),
        headers={"Depth": "0"},
        auth=("stranger", PASSWORD),
        timeout=10,
    )
    missing = requests.request(
        "PROPFIND",
        box.dav("no-such-box/"),
        headers={"Depth": "0"},
        auth=("stranger", PASSWORD),
        timeout=10,
    )
    assert hidden.status_code == missing.status_code == 404
    assert hidden.text == missing.text
    listing = requests.request(
        "PROPFIND", box.dav(""), headers={"Depth": "1"}, auth=("stranger", PASSWORD), timeout=10
    )
    assert "proto" not in listing.text


def test_nfd_names_are_stored_as_nfc(box):
    nfd = unicodedata.normalize("NFD", "café.txt")
    nfc = unicodedata.normalize("NFC", "café.txt")
    assert (
        requests.put(box.dav("proto/" + quote(nfd)), data=b"mac", auth=AUTH, timeout=10).status_code
        == 201
    )
    got = requests.get(box.dav("proto/" + quote(nfc)), auth=AUTH, timeout=10)
    assert got.content == b"mac"
    listing = requests.request(
        "PROPFIND", box.dav("proto/"), headers={"Depth": "1"}, auth=AUTH, timeout=10
    )
    assert quote(nfc) in listing.text


def _propfind_status(url: str, auth: tuple[str, str]) -> int:
    return requests.request(
        "PROPFIND", url, headers={"Depth": "0"}, auth=auth, timeout=10
    ).status_code


def test_password_change_and_disable_take_effect_at_once(box):
    box.add_user("changer")
    box.mailbox("changer", changer="member")
    url = box.dav("changer/")
    new = ("changer", "a-brand-new-password")
    assert _propfind_status(url, ("changer", PASSWORD)) == 207
    accounts.set_password(box.database(), "changer", new[1])
    time.sleep(1.2)  # auth.refresh_interval
    assert _propfind_status(url, ("changer", PASSWORD)) == 401
    assert _propfind_status(url, new) == 207
    accounts.set_disabled(box.database(), "changer", True)
    time.sleep(1.2)
    assert _propfind_status(url, new) == 401


def test_dead_properties_and_locks_survive_a_restart(make_server):
    server = make_server("restart")
    server.add_user("keeper")
    server.mailbox("keep", keeper="member")
    auth = ("keeper", PASSWORD)
    url = server.dav("keep/doc.txt")
    assert requests.put(url, data=b"doc", auth=auth, timeout=10).status_code == 201
    proppatch = (
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:davbox-test">'
        b"<D:set><D:prop><Z:label>confidential</Z:label></D:prop></D:set></D:propertyupdate>"
    )
    assert (
        requests.request("PROPPATCH", url, data=proppatch, auth=auth, timeout=10).status_code == 207
    )
    lock = requests.request("LOCK", url, data=LOCK_BODY, auth=auth, timeout=10)
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]

    server.stop()
    server.start()

    propfind = (
        b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:davbox-test">'
        b"<D:prop><Z:label/><D:lockdiscovery/></D:prop></D:propfind>"
    )
    response = requests.request(
        "PROPFIND", url, data=propfind, headers={"Depth": "0"}, auth=auth, timeout=10
    )
    assert response.status_code == 207
    assert "confidential" in response.text
    assert token.strip("<>") in response.text
    # Still locked: a PUT without the token is refused, with it allowed.
    assert requests.put(url, data=b"x", auth=auth, timeout=10).status_code == 423
    assert (
        requests.put(
            url, data=b"v2", headers={"If": f"({token})"}, auth=auth, timeout=10
        ).status_code
        == 204
    )


def test_copy_and_move_between_mailboxes(box):
    box.mailbox("proto-b", proto="member")
    assert (
        requests.put(box.dav("proto/x.txt"), data=b"cross", auth=AUTH, timeout=10).status_code
        == 201
    )
    copy = requests.request(
        "COPY",
        box.dav("proto/x.txt"),
        headers={"Destination": box.dav("proto-b/x.txt")},
        auth=AUTH,
        timeout=10,
    )
    assert copy.status_code == 201
    move = requests.request(
        "MOVE",
        box.dav("proto/x.txt"),
        headers={"Destination": box.dav("proto-b/y.txt")},
        auth=AUTH,
        timeout=10,
    )
    assert move.status_code == 201
    assert requests.get(box.dav("proto-b/y.txt"), auth=AUTH, timeout=10).content == b"cross"
    assert requests.get(box.dav("proto/x.txt"), auth=AUTH, timeout=10).status_code == 404


def test_tls_from_config(make_server, tmp_path):
    import subprocess
    import sys

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "davbox",
            "cert",
            "--self-signed",
            "--host",
            "127.0.0.1",
            "--cert",
            str(cert),
            "--key",
            str(key),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = tmp_path / "tls.yaml"
    config.write_text(f"server:\n  tls:\n    cert: {cert}\n    key: {key}\n")
    server = make_server("tls", start=False, config=config)
    server.url_scheme = "https"
    server.start()
    assert any(f"https://127.0.0.1:{server.port}/dav/" in line for line in server.output)
    response = requests.request(
        "PROPFIND",
        f"https://127.0.0.1:{server.port}/dav/",
        headers={"Depth": "0"},
        auth=("admin", server.admin_password),
        verify=str(cert),
        timeout=10,
    )
    assert response.status_code == 207


def test_xml_bodies_over_1_mib_are_refused(box):
    body = b"<?xml version='1.0'?><D:propfind xmlns:D='DAV:'>" + b" " * (2 * 1024 * 1024)
    response = requests.request(
        "PROPFIND", box.dav("proto/"), data=body, headers={"Depth": "0"}, auth=AUTH, timeout=30
    )
    assert response.status_code == 413
    assert "limited to 1 MiB" in response.text


def test_refused_upload_is_answered_without_reading_the_body(box):
    """A non-member's 1 GiB PUT gets its 404 at once; the server does not swallow the gigabyte."""
    box.add_user("stranger2")
    with socket.create_connection(("127.0.0.1", box.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /dav/proto/huge.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n"
            b"Authorization: Basic " + _basic("stranger2", PASSWORD) + b"\r\n\r\n" + b"x" * 1000
        )
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 404 ") or response.startswith(b"HTTP/1.1 403 ")
    assert b"Connection: close" in response


def test_unauthenticated_upload_is_answered_without_reading_the_body(box):
    with socket.create_connection(("127.0.0.1", box.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /dav/proto/huge.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"
        )
        response = sock.recv(65536)
    assert response.startswith(b"HTTP/1.1 401 ")
    assert b"Connection: close" in response


def test_refusals_are_events_with_request_id_actor_and_rule(box):
    box.add_user("peeker")
    box.mailbox("proto-ro", peeker="reader")
    response = requests.put(
        box.dav("proto-ro/x.txt"), data=b"x", auth=("peeker", PASSWORD), timeout=10
    )
    assert response.status_code == 403
    log = box.log_text(until="access-refused .*actor='peeker'")
    line = next(
        line for line in log.splitlines() if "access-refused" in line and "actor='peeker'" in line
    )
    assert (
        "mailbox='proto-ro' path='/x.txt' operation='create' status=403 rule='membership'" in line
    )
    assert re.search(r"request_id='[0-9a-f]{16}'", line)
    assert "client='127.0.0.1'" in line
