"""Who may do what: every mailbox role and a non-member against every WebDAV method.

One line per (method, target, role) → expected status, against a real server.
Each case gets a fresh mailbox state prepared by a manager account.
"""

from __future__ import annotations

import re
import time
import uuid

import pytest
import requests

from tests.davserver import PASSWORD

ROLES = ["manager", "member", "reader", "dropper"]
WHO = [*ROLES, "outsider"]
LOCK_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    "<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    "<D:owner>matrix</D:owner></D:lockinfo>"
)
PROPPATCH_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x">'
    "<D:set><D:prop><Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>"
)

# (method, target, extra) -> expected status for manager, member, reader, dropper, outsider
MATRIX = [
    ("GET", "file", {}, [200, 200, 200, 404, 404]),
    ("HEAD", "file", {}, [200, 200, 200, 404, 404]),
    ("PROPFIND", "root", {"Depth": "1"}, [207, 207, 207, 207, 404]),
    ("PROPFIND", "file", {"Depth": "0"}, [207, 207, 207, 404, 404]),
    ("PROPFIND", "missing", {"Depth": "0"}, [404, 404, 404, 404, 404]),
    ("OPTIONS", "root", {}, [200, 200, 200, 200, 404]),
    ("PUT", "new", {}, [201, 201, 403, 201, 404]),
    ("PUT", "file", {}, [204, 204, 403, 201, 404]),  # a dropper adds "file (2).txt"
    ("DELETE", "file", {}, [204, 204, 403, 404, 404]),
    ("DELETE", "folder", {}, [204, 204, 403, 404, 404]),
    ("DELETE", "root", {}, [403, 403, 403, 403, 404]),
    ("MKCOL", "new", {}, [201, 201, 403, 403, 404]),
    ("COPY", "file", {"to": "new"}, [201, 201, 403, 404, 404]),
    # "other" is a mailbox only manager and member belong to: for the rest it does not exist.
    ("COPY", "file", {"to": "other"}, [201, 201, 409, 404, 404]),
    ("MOVE", "file", {"to": "new"}, [201, 201, 403, 404, 404]),
    ("MOVE", "folder", {"to": "new"}, [201, 201, 403, 404, 404]),
    ("MOVE", "file", {"to": "other"}, [201, 201, 409, 404, 404]),
    ("PROPPATCH", "file", {}, [207, 207, 403, 404, 404]),
    ("LOCK", "file", {}, [200, 200, 403, 201, 404]),  # a dropper locks "file (2).txt"
    ("LOCK", "new", {}, [201, 201, 403, 201, 404]),
]


@pytest.fixture(scope="module")
def world(shared_server):
    server = shared_server
    for name in [*WHO, "boss"]:
        server.add_user(name)
    server.mailbox("other", boss="manager", manager="member", member="member")
    return server


def _prepare(server) -> str:
    """A fresh mailbox with a file and a folder, every role granted."""
    box = "m" + uuid.uuid4().hex[:10]
    server.mailbox(box, boss="manager", **{role: role for role in ROLES})
    auth = ("boss", PASSWORD)
    assert (
        requests.put(server.dav(f"{box}/file.txt"), data=b"v1", auth=auth, timeout=10).status_code
        == 201
    )
    assert (
        requests.request("MKCOL", server.dav(f"{box}/folder"), auth=auth, timeout=10).status_code
        == 201
    )
    assert (
        requests.put(
            server.dav(f"{box}/folder/in.txt"), data=b"x", auth=auth, timeout=10
        ).status_code
        == 201
    )
    return box


def _path(box: str, target: str) -> str:
    return {
        "root": f"{box}/",
        "file": f"{box}/file.txt",
        "folder": f"{box}/folder/",
        "missing": f"{box}/nothing.txt",
        "new": f"{box}/new.txt",
        "other": "other/" + uuid.uuid4().hex[:8] + ".txt",
    }[target]


CASES = [
    pytest.param(
        method,
        target,
        extra,
        who,
        expected[WHO.index(who)],
        id=f"{method}-{target}{'-' + extra['to'] if 'to' in extra else ''}-{who}",
    )
    for method, target, extra, expected in MATRIX
    for who in WHO
]


@pytest.mark.parametrize(("method", "target", "extra", "who", "expected"), CASES)
def test_role_matrix(world, method, target, extra, who, expected):
    box = _prepare(world)
    headers = {k: v for k, v in extra.items() if k != "to"}
    body = None
    if "to" in extra:
        headers["Destination"] = world.dav(_path(box, extra["to"]))
    if method == "PUT":
        body = b"v2"
    elif method == "LOCK":
        body = LOCK_BODY.encode()
    elif method == "PROPPATCH":
        body = PROPPATCH_BODY.encode()
    response = requests.request(
        method,
        world.dav(_path(box, target)),
        headers=headers,
        data=body,
        auth=(who, PASSWORD),
        timeout=10,
    )
    assert response.status_code == expected, response.text
    if response.status_code in (403, 404) and method != "HEAD":
        assert response.text.strip(), "refusals carry a readable reason"
    if method == "PROPPATCH" and expected == 207:
        assert "200 OK" in response.text


def test_dropper_listing_shows_no_names(world):
    box = _prepare(world)
    response = requests.request(
        "PROPFIND",
        world.dav(f"{box}/"),
        headers={"Depth": "1"},
        auth=("dropper", PASSWORD),
        timeout=10,
    )
    assert response.status_code == 207
    assert "file.txt" not in response.text and "folder" not in response.text


def test_refusal_names_the_role_and_the_action(world):
    box = _prepare(world)
    response = requests.put(
        world.dav(f"{box}/file.txt"), data=b"x", auth=("reader", PASSWORD), timeout=10
    )
    assert response.status_code == 403
    assert (
        f"your role in mailbox '{box}' (reader) does not allow you to replace files"
        in response.text
    )


def test_dropper_can_create_a_file_by_lock_then_put(world):
    """Explorer and Finder create files with LOCK, PUT with the token, then UNLOCK."""
    box = _prepare(world)
    url = world.dav(f"{box}/dropped.pdf")
    auth = ("dropper", PASSWORD)
    lock = requests.request("LOCK", url, data=LOCK_BODY.encode(), auth=auth, timeout=10)
    assert lock.status_code == 201
    token = lock.headers["Lock-Token"]
    put = requests.put(
        url, data=b"%PDF-1.4 body", headers={"If": f"({token})"}, auth=auth, timeout=10
    )
    assert put.status_code == 204
    unlock = requests.request("UNLOCK", url, headers={"Lock-Token": token}, auth=auth, timeout=10)
    assert unlock.status_code == 204
    # The same name again: stored beside it, the same answer as for a new name.
    again = requests.put(url, data=b"%PDF-1.4 second", auth=auth, timeout=10)
    assert again.status_code == 201
    assert "Location" not in again.headers
    got = requests.get(url, auth=("boss", PASSWORD), timeout=10)
    assert got.content == b"%PDF-1.4 body", "the first upload is untouched"
    beside = requests.get(world.dav(f"{box}/dropped (2).pdf"), auth=("boss", PASSWORD), timeout=10)
    assert beside.content == b"%PDF-1.4 second"


def test_group_grant_gives_access_and_revoke_takes_it(world):
    box = "g" + uuid.uuid4().hex[:8]
    from davbox import accounts

    accounts.add_group(world.database(), box + "-team")
    accounts.change_group_members(world.database(), box + "-team", ["outsider"], [])
    world.mailbox(box, **{"@" + box + "-team": "reader"})
    url = world.dav(f"{box}/")
    auth = ("outsider", PASSWORD)
    assert _status_within(url, auth, 207, seconds=5) == 207
    accounts.revoke(world.database(), box, "@" + box + "-team")
    # Revocations reach the server within auth.refresh_interval.
    assert _status_within(url, auth, 404, seconds=5) == 404


def _status_within(url, auth, wanted, seconds):
    deadline = time.monotonic() + seconds
    while True:
        status = requests.request(
            "PROPFIND", url, headers={"Depth": "0"}, auth=auth, timeout=10
        ).status_code
        if status == wanted or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_a_dropper_cannot_hold_a_lock_for_weeks(world):
    box = _prepare(world)
    response = requests.request(
        "LOCK",
        world.dav(f"{box}/claim.pdf"),
        data=LOCK_BODY.encode(),
        headers={"Timeout": "Second-2419200"},
        auth=("dropper", PASSWORD),
        timeout=10,
    )
    assert response.status_code == 201
    granted = re.search(r"<\w+:timeout>Second-(\d+)</\w+:timeout>", response.text)
    assert granted and 0 < int(granted.group(1)) <= 600, response.text


def test_dropper_lock_put_unlock_of_a_name_with_spaces(world):
    """Explorer's "New Text Document (2).txt": the lock placeholder is found by its quoted URL."""
    box = _prepare(world)
    url = world.dav(f"{box}/New Text Document (2).txt")
    auth = ("dropper", PASSWORD)
    lock = requests.request("LOCK", url, data=LOCK_BODY.encode(), auth=auth, timeout=10)
    assert lock.status_code == 201
    token = lock.headers["Lock-Token"]
    put = requests.put(url, data=b"hello", headers={"If": f"({token})"}, auth=auth, timeout=10)
    assert put.status_code == 204, "the PUT fills the caller's own placeholder"
    unlock = requests.request("UNLOCK", url, headers={"Lock-Token": token}, auth=auth, timeout=10)
    assert unlock.status_code == 204
    got = requests.get(url, auth=("boss", PASSWORD), timeout=10)
    assert got.content == b"hello"


def test_parallel_drops_of_one_name_all_arrive_and_none_is_replaced(world):
    """Ten droppers upload the same new name at once: ten files, each whole."""
    from concurrent.futures import ThreadPoolExecutor

    box = _prepare(world)
    url = world.dav(f"{box}/report.txt")
    bodies = [f"upload {n} ".encode() * 20000 for n in range(10)]

    def put(body: bytes) -> int:
        return requests.put(url, data=body, auth=("dropper", PASSWORD), timeout=30).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(put, bodies))
    assert statuses == [201] * 10
    names = ["report.txt"] + [f"report ({n}).txt" for n in range(2, 11)]
    stored = {
        requests.get(world.dav(f"{box}/{name}"), auth=("boss", PASSWORD), timeout=10).content
        for name in names
    }
    assert stored == set(bodies)
