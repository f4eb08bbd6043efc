"""COPY/MOVE onto existing items, and odd requests that once gave a 500."""

from __future__ import annotations

import socket
import uuid

import pytest
import requests

from tests.davserver import PASSWORD

PASS = PASSWORD


@pytest.fixture(scope="module")
def srv(make_server_module):
    return make_server_module


@pytest.fixture(scope="module")
def make_server_module(tmp_path_factory):
    from tests.davserver import DavboxServer

    base = tmp_path_factory.mktemp("dest")
    config = base / "c.yaml"
    config.write_text(
        "auth:\n  two_factor_for: []\n"
        "policies:\n  - type: deny\n    paths: ['/archive/*']\n"
        "    operations: [delete, overwrite, move]\n    reason: the archive is kept\n"
    )
    server = DavboxServer(base / "data", config=config).start()
    for name in ("mem", "drop"):
        server.add_user(name)
    server.mailbox("own", drop="member", mem="member")
    yield server
    server.stop()


def fresh(server) -> str:
    box = "d" + uuid.uuid4().hex[:8]
    server.mailbox(box, mem="member", drop="dropper")
    auth = ("mem", PASS)
    for folder in ("reports", "archive", "archive/sub", "empty"):
        assert (
            requests.request(
                "MKCOL", server.dav(f"{box}/{folder}"), auth=auth, timeout=10
            ).status_code
            == 201
        )
    for name in ("reports/q1.txt", "archive/sub/contract.txt", "x.txt"):
        assert (
            requests.put(
                server.dav(f"{box}/{name}"), data=b"keep", auth=auth, timeout=10
            ).status_code
            == 201
        )
    assert requests.put(
        server.dav("own/junk.txt"), data=b"junk", auth=auth, timeout=10
    ).status_code in (201, 204)
    return box


@pytest.mark.parametrize("method", ["COPY", "MOVE"])
def test_a_dropper_cannot_wipe_a_folder_by_copying_onto_it(srv, method):
    box = fresh(srv)
    response = requests.request(
        method,
        srv.dav("own/junk.txt"),
        headers={"Destination": srv.dav(f"{box}/reports")},
        auth=("drop", PASS),
        timeout=10,
    )
    assert response.status_code in (403, 404)
    assert (
        requests.get(srv.dav(f"{box}/reports/q1.txt"), auth=("mem", PASS), timeout=10).content
        == b"keep"
    )


@pytest.mark.parametrize(
    ("method", "source", "target", "depth"),
    [
        pytest.param("MOVE", "empty/", "archive/sub/", None, id="move-folder-over-folder"),
        pytest.param("COPY", "x.txt", "archive/sub", None, id="copy-file-over-folder"),
        pytest.param("COPY", "empty/", "archive/sub/", "0", id="copy-depth-0-over-folder"),
    ],
)
def test_replacing_a_folder_needs_the_right_to_delete_what_is_in_it(
    srv, method, source, target, depth
):
    box = fresh(srv)
    headers = {"Destination": srv.dav(f"{box}/{target}")}
    if depth:
        headers["Depth"] = depth
    response = requests.request(
        method, srv.dav(f"{box}/{source}"), headers=headers, auth=("mem", PASS), timeout=10
    )
    assert response.status_code == 403
    assert "the archive is kept" in response.text
    assert (
        requests.get(
            srv.dav(f"{box}/archive/sub/contract.txt"), auth=("mem", PASS), timeout=10
        ).content
        == b"keep"
    )


def test_a_member_may_replace_a_folder_by_a_file(srv):
    box = fresh(srv)
    response = requests.request(
        "COPY",
        srv.dav(f"{box}/x.txt"),
        headers={"Destination": srv.dav(f"{box}/reports")},
        auth=("mem", PASS),
        timeout=10,
    )
    assert response.status_code == 204
    assert (
        requests.get(srv.dav(f"{box}/reports"), auth=("mem", PASS), timeout=10).content == b"keep"
    )


@pytest.mark.parametrize("destination", ["http://[::1/dav/x", "http://[zz]/dav/x"])
def test_malformed_destination_is_400(srv, destination):
    box = fresh(srv)
    response = requests.request(
        "MOVE",
        srv.dav(f"{box}/x.txt"),
        headers={"Destination": destination},
        auth=("mem", PASS),
        timeout=10,
    )
    assert response.status_code == 400


def test_http_1_0_copy_without_host_is_not_a_500(srv):
    box = fresh(srv)
    import base64

    token = base64.b64encode(f"mem:{PASS}".encode()).decode()
    request = (
        f"COPY /dav/{box}/x.txt HTTP/1.0\r\nAuthorization: Basic {token}\r\n"
        f"Destination: /dav/{box}/y.txt\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(request)
        reply = sock.recv(4096)
    assert not reply.startswith(b"HTTP/1.1 500") and not reply.startswith(b"HTTP/1.0 500"), reply[
        :100
    ]


def test_overlong_paths_get_414(srv):
    box = fresh(srv)
    response = requests.request(
        "MKCOL", srv.dav(f"{box}/" + "a" * 250 + "/b" * 1500), auth=("mem", PASS), timeout=10
    )
    assert response.status_code == 414


def test_options_tells_a_dropper_nothing(srv):
    box = fresh(srv)
    answers = {
        path: requests.options(
            srv.dav(f"{box}/{path}"), auth=("drop", PASS), timeout=10
        ).headers.get("Allow")
        for path in ("x.txt", "reports/", "missing.txt")
    }
    assert len(set(answers.values())) == 1, answers
