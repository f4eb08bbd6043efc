"""Share links in the browser, over HTTP against a real ``davbox serve``.

What a link does is seen from outside, as a browser would: the one 404 page
for every unusable token (same bytes, about the same time), the password
prompt, its remembered-password cookie and throttling, listings that stay
inside the link, byte-identical downloads and streamed zips, download limits
under parallel requests, and the resumable upload API (chunks, resume,
policy refusals, no overwriting, upload windows, drop links that see
nothing). Links are made with ``davbox.links.create`` on the server's own
database; files are put straight into the mailbox folders.

Most tests share one server (module scope) whose policies limit the
``drop*`` mailboxes (types, content, size) and ``quota*`` mailboxes (a
quota); each test makes its own mailboxes.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import io
import itertools
import os
import random
import re
import secrets
import socket
import statistics
import threading
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, update

from davbox import links
from davbox.access import MailboxAccess
from davbox.db.models import Mailbox, ShareLink
from davbox.events import EventBus
from davbox.links import Link
from davbox.passwords import hash_password
from davbox.policies.base import Principal
from davbox.policies.engine import PolicyEngine
from davbox.providers.storage.filesystem import FilesystemStorage
from davbox.uploads import ResumableUploads, UploadNotFound, UploadTarget
from tests.davserver import DavboxServer
from tests.test_web_login import WebClient

CHUNK = 8 * 1024 * 1024
GONE = "This link does not work"
LINK_PASSWORD = "a-link-password-for-tests"
DATA_CSRF = re.compile(r'data-csrf="([^"]+)"')
_numbers = itertools.count(1)

CONFIG = """
auth:
  throttle_address_failures: 100000
policies:
  - name: drop-types
    type: extensions
    mailboxes: ["drop*"]
    allow: [pdf, txt, bin]
    verify_content: true
  - name: drop-size
    type: size
    mailboxes: ["drop*"]
    max_file_size: 30MB
  - name: small-quota
    type: quota
    mailboxes: ["quota*"]
    max_bytes: 10MB
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavboxServer]:
    config = tmp_path_factory.mktemp("cfg") / "davbox.yaml"
    config.write_text(CONFIG)
    srv = DavboxServer(tmp_path_factory.mktemp("links") / "data", config=config).start()
    yield srv
    srv.stop()


class LinkClient(WebClient):
    """A browser for link pages: WebClient's cookies, plus the upload API with its CSRF header."""

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = super().request(method, path, **kwargs)
        if found := DATA_CSRF.search(response.text):
            self.csrf = found.group(1)
        return response

    def api(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        csrf: str | None = None,
    ) -> requests.Response:
        headers = {"X-Davbox-CSRF": self.csrf if csrf is None else csrf}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return requests.request(
            method,
            self.url + path,
            json=json,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=60,
        )

    def start(self, base: str, name: str, size: int, folder: str = "") -> requests.Response:
        return self.api(
            "POST", f"{base}/uploads", json={"name": name, "size": size, "folder": folder}
        )

    def upload(self, base: str, name: str, data: bytes, folder: str = "") -> requests.Response:
        """The whole resumable upload as the page's script does it; the finish answer."""
        started = self.start(base, name, len(data), folder)
        if started.status_code != 201:
            return started
        url = f"{base}/uploads/{started.json()['id']}"
        for offset in range(0, len(data), CHUNK):
            sent = self.api("PUT", f"{url}?offset={offset}", body=data[offset : offset + CHUNK])
            if sent.status_code != 200:
                return sent
        return self.api("POST", url)


# -- helpers ----------------------------------------------------------------------


def mailbox(server: DavboxServer, prefix: str) -> tuple[str, Path]:
    """A new mailbox and its folder on disk."""
    name = f"{prefix}{next(_numbers)}"
    server.mailbox(name)
    with server.database().session() as session:
        key = session.execute(select(Mailbox.storage_key).where(Mailbox.name == name)).scalar_one()
    folder = server.data_dir / "storage" / "mailboxes" / key
    folder.mkdir(parents=True, exist_ok=True)
    return name, folder


def put(folder: Path, rel: str, data: bytes) -> bytes:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def make_link(
    server: DavboxServer,
    box: str,
    path: str = "/",
    permission: str = "read",
    *,
    is_folder: bool = True,
    **options: Any,
) -> tuple[Link, str]:
    return links.create(
        server.database(),
        mailbox=box,
        path=path,
        is_folder=is_folder,
        permission=permission,
        **options,
    )


def change_link(server: DavboxServer, link: Link, **values: Any) -> None:
    with server.database().session() as session:
        session.execute(update(ShareLink).where(ShareLink.id == link.id).values(**values))


def downloads_of(server: DavboxServer, link: Link) -> int:
    with server.database().session() as session:
        return session.execute(
            select(ShareLink.downloads).where(ShareLink.id == link.id)
        ).scalar_one()


def raw_get(server: DavboxServer, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written ("..", "%2e%2e", "//"): requests would normalise it."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def files_in(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def temps(server: DavboxServer) -> list[str]:
    return sorted(p.name for p in (server.data_dir / "storage" / "tmp").iterdir())


def server_log(server: DavboxServer, until: str | None = None) -> str:
    """The server's log, once a line matches ``until`` (log lines are written from a queue)."""
    return server.log_text(until)


# -- the one 404 ----------------------------------------------------------------------


def _near_misses(token: str) -> list[str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    changed = [
        token[:i] + next(c for c in alphabet if c != token[i]) + token[i + 1 :]
        for i in range(len(token))
    ]
    return [*changed, token[:-1], token[:-5], token[:20], token + "A", token + "xyz", token.upper()]


def test_every_unusable_token_gets_the_same_404_in_about_the_same_time(server):
    box, folder = mailbox(server, "gone")
    put(folder, "a.txt", b"hello")
    _live, token = make_link(server, box)
    expired, expired_token = make_link(server, box, expires_at=datetime.now(UTC) + timedelta(1))
    change_link(server, expired, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    revoked, revoked_token = make_link(server, box)
    links.revoke(server.database(), revoked.id)
    exhausted, exhausted_token = make_link(server, box, max_downloads=1)
    change_link(server, exhausted, downloads=1)
    session = requests.Session()

    def timed(path: str) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        response = session.get(server.url + path, timeout=10)
        return response.status_code, response.content, time.perf_counter() - started

    assert session.get(f"{server.url}/s/{token}", timeout=10).status_code == 200
    kinds: dict[str, list[str]] = {
        "random": [secrets.token_urlsafe(24) for _ in range(1000)],
        "near miss": _near_misses(token),
        "expired": [expired_token] * 100,
        "revoked": [revoked_token] * 100,
        "exhausted": [exhausted_token] * 100,
        "odd shapes": ["x", "a" * 300, "ÿ", "-", "~"] * 20,
    }
    bodies: set[bytes] = set()
    times: dict[str, list[float]] = {}
    # In a random order, so that load from elsewhere (other tests running at
    # the same time) falls on every kind alike rather than on one stretch.
    asked = [(kind, candidate) for kind, tokens in kinds.items() for candidate in tokens]
    random.Random(4).shuffle(asked)
    for kind, candidate in asked:
        status, body, seconds = timed(f"/s/{candidate}")
        assert status == 404, (kind, candidate)
        bodies.add(body)
        times.setdefault(kind, []).append(seconds)
    # Below a usable link too: a path outside it, and files/zip/uploads of dead links.
    for path in (
        f"/s/{token}/files/nothing-here.txt",
        f"/s/{token}/elsewhere",
        f"/s/{expired_token}/files/a.txt",
        f"/s/{revoked_token}/zip",
        f"/s/{exhausted_token}/files/a.txt",
    ):
        status, body, _ = timed(path)
        assert status == 404, path
        bodies.add(body)
    assert len(bodies) == 1, "every 404 of a link has the same bytes"
    body = bodies.pop().decode()
    assert GONE in body
    for candidate in (token, expired_token, revoked_token, exhausted_token):
        assert candidate not in body
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    print("404 medians (ms):", {k: round(v * 1000, 2) for k, v in medians.items()})
    assert max(medians.values()) < 3 * min(medians.values()), medians
    log = server_log(server)
    for candidate in (token, expired_token, revoked_token, exhausted_token):
        assert candidate not in log, "tokens never reach the log"


def test_a_dutch_browser_gets_the_404_in_dutch(server):
    response = requests.get(
        f"{server.url}/s/{secrets.token_urlsafe(24)}",
        headers={"Accept-Language": "nl-NL,nl;q=0.9"},
        timeout=10,
    )
    assert response.status_code == 404
    assert "Deze link werkt niet" in response.text


# -- passwords --------------------------------------------------------------------------


def test_password_prompt_cookie_and_what_ends_it(server):
    box, folder = mailbox(server, "pw")
    put(folder, "secret.txt", b"for your eyes")
    link, token = make_link(server, box, password=LINK_PASSWORD, note="See attached.")
    other, other_token = make_link(server, box, password=LINK_PASSWORD)
    client = LinkClient(server)

    prompt = client.get(f"/s/{token}")
    assert prompt.status_code == 200
    assert 'type="password"' in prompt.text and "secret.txt" not in prompt.text
    assert "See attached." not in prompt.text, "nothing of the link before the password"
    wanted = rf"link-viewed .*link_id={link.id} page='password'"
    assert re.search(wanted, server_log(server, until=wanted))
    assert client.get(f"/s/{token}/files/secret.txt").status_code == 200
    assert "secret.txt" not in client.get(f"/s/{token}/files/secret.txt").text

    assert client.post(f"/s/{token}", {"password": LINK_PASSWORD}).status_code == 400, "CSRF"
    wrong = client.post(f"/s/{token}", {"csrf": client.csrf, "password": "not-it"})
    assert wrong.status_code == 401 and "Wrong password." in wrong.text

    right = client.submit(f"/s/{token}", {"password": LINK_PASSWORD})
    assert (right.status_code, right.headers["Location"]) == (303, f"/s/{token}")
    name = f"__Host-davbox-link-{link.id}"
    raw = next(h for h in client.raw_set_cookies if h.startswith(name + "="))
    attributes = {a.strip().split("=")[0].lower() for a in raw.split(";")[1:]}
    assert {"secure", "httponly", "path"} <= attributes
    assert "SameSite=Strict" in raw and "Path=/" in raw and "Domain" not in raw
    page = client.get(f"/s/{token}")
    assert page.status_code == 200 and "secret.txt" in page.text and "See attached." in page.text
    assert client.get(f"/s/{token}/files/secret.txt").content == b"for your eyes"

    # The cookie opens this link only, and only with this password hash.
    assert "secret.txt" not in client.get(f"/s/{other_token}").text
    stolen = LinkClient(server, {f"__Host-davbox-link-{other.id}": client.cookies[name]})
    assert "secret.txt" not in stolen.get(f"/s/{other_token}").text
    change_link(server, link, password_hash=hash_password("another-link-password"))
    assert "secret.txt" not in client.get(f"/s/{token}").text, "a new password ends it"
    change_link(server, link, password_hash=hash_password(LINK_PASSWORD))
    client.submit(f"/s/{token}", {"password": LINK_PASSWORD})
    assert "secret.txt" in client.get(f"/s/{token}").text
    links.revoke(server.database(), link.id)
    assert client.get(f"/s/{token}").status_code == 404, "revoking acts at once"


def _cookie(server: DavboxServer, link: Link, signed_ago: float, given_ago: float) -> str:
    """A remembered-password cookie as the server makes it, signed and given in the past."""
    db = server.database()
    with db.session() as session:
        hashed = session.execute(
            select(ShareLink.password_hash).where(ShareLink.id == link.id)
        ).scalar_one()
    material = f"{link.id}\0{hashed}".encode()
    fingerprint = hmac.new(db.server_secret(), material, hashlib.sha256).hexdigest()[:32]
    now = time.time()

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(now - signed_ago)

    signer = URLSafeTimedSerializer(
        db.server_secret(), salt="davbox link password", signer=PastSigner
    )
    return signer.dumps([link.id, fingerprint, int(now - given_ago)])


@pytest.mark.parametrize(
    ("signed_ago", "given_ago", "opens"),
    [
        pytest.param(60, 60, True, id="fresh"),
        pytest.param(3000, 11 * 3600, True, id="used within the hour, given 11 h ago"),
        pytest.param(3700, 3700, False, id="idle over an hour"),
        pytest.param(60, 12 * 3600 + 60, False, id="given over 12 hours ago"),
    ],
)
def test_the_remembered_password_expires(server, signed_ago, given_ago, opens):
    box, folder = mailbox(server, "pwage")
    put(folder, "inside.txt", b"x")
    link, token = make_link(server, box, password=LINK_PASSWORD)
    cookie = _cookie(server, link, signed_ago, given_ago)
    client = LinkClient(server, {f"__Host-davbox-link-{link.id}": cookie})
    assert ("inside.txt" in client.get(f"/s/{token}").text) is opens


def test_link_passwords_are_throttled(server):
    box, folder = mailbox(server, "pwthrottle")
    put(folder, "inside.txt", b"x")
    link, token = make_link(server, box, password=LINK_PASSWORD)
    client = LinkClient(server)
    client.get(f"/s/{token}")
    for _ in range(10):
        wrong = client.post(f"/s/{token}", {"csrf": client.csrf, "password": "guess-again"})
        assert wrong.status_code == 401
    blocked = client.post(f"/s/{token}", {"csrf": client.csrf, "password": LINK_PASSWORD})
    assert blocked.status_code == 429
    retry_after = int(blocked.headers["Retry-After"])
    assert retry_after >= 1
    assert f"Too many failed attempts. Wait {retry_after} seconds and try again." in blocked.text
    assert f"__Host-davbox-link-{link.id}" not in client.cookies
    assert f"actor='link-{link.id}'" in server_log(server, until=f"actor='link-{link.id}'")


# -- read links ------------------------------------------------------------------------


def test_read_link_lists_browses_and_downloads(server):
    box, folder = mailbox(server, "read")
    report = put(folder, "shared/Überweisung März.pdf", os.urandom(300_000))
    put(folder, "shared/sub/deeper.txt", b"deep")
    put(folder, "private/secret.txt", b"not shared")
    link, token = make_link(server, box, "/shared", label="Stukken", note="Line one\nLine two")
    client = LinkClient(server)

    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    assert "Stukken" in page.text and "Line one\nLine two" in page.text
    assert "Überweisung März.pdf" in page.text and "300 KB" in page.text
    assert "sub" in page.text and "secret.txt" not in page.text and "private" not in page.text
    assert "<script" not in page.text, "a read link needs no script"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"

    sub = client.get(f"/s/{token}/files/sub/")
    assert sub.status_code == 200 and "deeper.txt" in sub.text

    quoted = requests.utils.quote("Überweisung März.pdf")
    download = client.get(f"/s/{token}/files/{quoted}")
    assert download.status_code == 200 and download.content == report
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%C3%9Cberweisung%20M%C3%A4rz.pdf" in disposition
    assert download.headers["Cache-Control"] == "private, no-store"
    ranged = client.get(f"/s/{token}/files/{quoted}", headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206 and ranged.content == report[100:200]
    assert client.get(f"/s/{token}/files/sub/deeper.txt").content == b"deep"
    assert downloads_of(server, link) == 2, "the byte range starting past 0 is not counted"

    # A download is recorded (and logged, by the log thread) when its answer has ended.
    deadline = time.monotonic() + 10
    wanted = rf"link-downloaded .*path='/shared/sub/deeper.txt'.*link_id={link.id}"
    while not re.search(wanted, log := server_log(server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "link-viewed request_id=" in log and f"link_id={link.id}" in log
    assert re.search(wanted, log)


@pytest.mark.parametrize(
    "path",
    [
        "/files/../private/secret.txt",
        "/files/../../private/secret.txt",
        "/files/%2e%2e/private/secret.txt",
        "/files/sub/%2E%2E/%2e%2e/private/secret.txt",
        "/files/%2e%2e%2fprivate%2fsecret.txt",
        "/files//private/secret.txt",
        "/files/%2Fprivate%2Fsecret.txt",
        "/files//etc/passwd",
        "/files/..%5cprivate%5csecret.txt",
        "/zip/..",
        "/zip/%2e%2e",
        "/files/sub/../../private/secret.txt",
    ],
)
def test_browsing_cannot_leave_the_link(server, path):
    box, folder = mailbox(server, "escape")
    put(folder, "shared/sub/deeper.txt", b"deep")
    put(folder, "private/secret.txt", b"not shared")
    _link, token = make_link(server, box, "/shared")
    gone = requests.get(f"{server.url}/s/{secrets.token_urlsafe(24)}", timeout=10).content
    status, body = raw_get(server, f"/s/{token}{path}")
    assert status == 404 and body == gone


def test_read_link_to_one_file(server):
    box, folder = mailbox(server, "onefile")
    data = put(folder, "docs/plan.txt", b"the plan\n" * 1000)
    put(folder, "docs/other.txt", b"other")
    _link, token = make_link(server, box, "/docs/plan.txt", is_folder=False, max_downloads=2)
    client = LinkClient(server)
    page = client.get(f"/s/{token}")
    assert page.status_code == 200
    assert "plan.txt" in page.text and f'href="/s/{token}/download"' in page.text
    assert "other.txt" not in page.text
    assert "Downloads left" in page.text
    assert client.get(f"/s/{token}/files/other.txt").status_code == 404
    assert client.get(f"/s/{token}/zip").status_code == 404
    assert client.get(f"/s/{token}/download").content == data
    assert client.get(f"/s/{token}/download").content == data
    assert client.get(f"/s/{token}/download").status_code == 404, "two downloads, then gone"
    assert client.get(f"/s/{token}").status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Range": "bytes=00-"}, id="leading-zero"),
        pytest.param({"Range": "bytes=5-", "If-Range": '"not-the-etag"'}, id="failed-if-range"),
        pytest.param({"Range": "bytes=0-3"}, id="first-bytes"),
    ],
)
def test_every_answer_that_sends_the_start_counts_as_a_download(server, headers):
    box, folder = mailbox(server, "ranges")
    put(folder, "a.txt", b"0123456789" * 100)
    link, token = make_link(server, box, "/a.txt", is_folder=False, max_downloads=1)
    client = LinkClient(server)
    first = client.get(f"/s/{token}/download", headers=headers)
    assert first.status_code in (200, 206) and first.content.startswith(b"0123")
    assert downloads_of(server, link) == 1
    assert client.get(f"/s/{token}/download").status_code == 404, "the one download is used"


def _rss_kib(server: DavboxServer) -> int:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def test_a_folder_downloads_as_one_streamed_zip(server):
    box, folder = mailbox(server, "zip")
    expected = {
        "Stukken/a.txt": put(folder, "Stukken/a.txt", b"alpha"),
        "Stukken/sub/b.bin": put(folder, "Stukken/sub/b.bin", os.urandom(100_000)),
        "Stukken/Ünïcode ñame.txt": put(folder, "Stukken/Ünïcode ñame.txt", "é".encode()),
    }
    for number in range(3):  # 120 MB in all: more than the server could hide in memory
        expected[f"Stukken/big/{number}.bin"] = put(
            folder, f"Stukken/big/{number}.bin", os.urandom(40 * 1000 * 1000)
        )
    (folder / "Stukken" / "empty").mkdir()
    os.symlink(folder / "Stukken-not-shared.txt", folder / "Stukken" / "link.txt")
    put(folder, "Stukken-not-shared.txt", b"x")
    link, token = make_link(server, box, "/Stukken")

    before = _rss_kib(server)
    peak = before
    with requests.get(f"{server.url}/s/{token}/zip", stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert "filename=Stukken.zip" in response.headers["Content-Disposition"]
        buffer = io.BytesIO()
        for number, piece in enumerate(response.iter_content(1024 * 1024)):
            buffer.write(piece)
            if number % 10 == 0:
                peak = max(peak, _rss_kib(server))
    print(f"server RSS {before // 1024} MiB before, {peak // 1024} MiB at most while zipping")
    assert peak - before < 40 * 1024, "the zip is streamed, not built in memory"
    with zipfile.ZipFile(buffer) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
        got = {n: archive.read(n) for n in names if not n.endswith("/")}
    assert got == expected, "every file, byte for byte, and no symlink"
    assert "Stukken/empty/" in names
    assert downloads_of(server, link) == 1
    wanted = rf"link-downloaded .*link_id={link.id} archive=True"
    assert re.search(wanted, server_log(server, until=wanted))


def test_parallel_downloads_cannot_exceed_max_downloads(server):
    box, folder = mailbox(server, "limit")
    data = put(folder, "f/file.bin", os.urandom(200_000))
    link, token = make_link(server, box, "/f", max_downloads=5)
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def fetch(path: str) -> None:
        response = requests.get(f"{server.url}/s/{token}{path}", timeout=30)
        with lock:
            results.append((response.status_code, response.content))

    threads = [
        threading.Thread(target=fetch, args=("/files/file.bin" if i % 4 else "/zip",))
        for i in range(24)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(status for status, _ in results)
    assert statuses.count(200) == 5 and statuses.count(404) == 19, statuses
    assert all(body == data or body.startswith(b"PK") for status, body in results if status == 200)
    assert downloads_of(server, link) == 5
    assert requests.get(f"{server.url}/s/{token}", timeout=10).status_code == 404


# -- uploads ------------------------------------------------------------------------------


def _drop(server: DavboxServer, **options: Any) -> tuple[str, Path, Link, str, LinkClient]:
    box, folder = mailbox(server, "drop")
    link, token = make_link(server, box, "/", "drop", **options)
    client = LinkClient(server)
    page = client.get(f"/s/{token}")
    assert page.status_code == 200 and client.csrf
    return box, folder, link, f"/s/{token}", client


def test_drop_page_and_a_multi_chunk_upload(server):
    _box, folder, link, base, client = _drop(server, label="Aanlevering", note="Max 30 MB.")
    put(folder, "already-there.pdf", b"%PDF-1.4 old")
    page = client.get(base)
    assert "Aanlevering" in page.text and "Max 30 MB." in page.text
    assert 'type="file"' in page.text and "multiple" in page.text
    assert 'aria-live="polite"' in page.text and 'src="/static/drop.js"' in page.text
    assert "already-there" not in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "unsafe" not in csp
    script = client.get("/static/drop.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["Content-Type"]

    data = os.urandom(2 * CHUNK + 1_234_567)  # 18 MiB: three chunks
    started = client.start(base, "große Datei.bin", len(data))
    assert started.status_code == 201
    upload = f"{base}/uploads/{started.json()['id']}"
    assert started.json()["chunk_size"] == CHUNK
    assert client.api("PUT", f"{upload}?offset=0", body=data[:CHUNK]).json() == {"offset": CHUNK}
    assert "große Datei.bin" not in files_in(folder), "nothing is visible before the end"
    for offset in range(CHUNK, len(data), CHUNK):
        assert client.api("PUT", f"{upload}?offset={offset}", body=data[offset : offset + CHUNK])
    finished = client.api("POST", upload)
    assert finished.status_code == 201
    assert finished.json() == {
        "name": "große Datei.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert (folder / "große Datei.bin").read_bytes() == data
    assert client.api("GET", upload).status_code == 404, "a finished upload is gone"
    wanted = rf"link-uploaded .*actor='link-{link.id}'.*path='/große Datei.bin'.*link_id={link.id}"
    assert re.search(wanted, server_log(server, until=wanted))


def test_an_interrupted_upload_resumes_where_it_broke_off(server):
    _box, folder, _link, base, client = _drop(server)
    data = os.urandom(CHUNK + 5_000_000)
    upload = f"{base}/uploads/{client.start(base, 'resumed.bin', len(data)).json()['id']}"
    assert client.api("PUT", f"{upload}?offset=0", body=data[:CHUNK]).status_code == 200

    # The next chunk breaks off after 3 MB: the connection is closed mid-body.
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = (
            f"PUT {upload}?offset={CHUNK} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(data) - CHUNK}\r\nX-Davbox-CSRF: {client.csrf}\r\n"
            f"Cookie: {cookie}\r\n\r\n"
        )
        sock.sendall(head.encode() + data[CHUNK : CHUNK + 3_000_000])
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while (status := client.api("GET", upload).json())["offset"] == CHUNK or status["receiving"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    offset = status["offset"]
    assert CHUNK < offset <= CHUNK + 3_000_000 and status["size"] == len(data)
    assert "resumed.bin" not in files_in(folder)

    wrong = client.api("PUT", f"{upload}?offset=0", body=data[:10])
    assert wrong.status_code == 409 and wrong.json()["offset"] == offset
    assert client.api("POST", upload).status_code == 409, "not finished while bytes are missing"
    assert client.api("PUT", f"{upload}?offset={offset}", body=data[offset:]).status_code == 200
    finished = client.api("POST", upload)
    assert finished.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert (folder / "resumed.bin").read_bytes() == data


def test_an_upload_can_be_discarded_and_leaves_nothing(server):
    _box, folder, _link, base, client = _drop(server)
    before = temps(server)
    upload = f"{base}/uploads/{client.start(base, 'never.bin', 100).json()['id']}"
    client.api("PUT", f"{upload}?offset=0", body=b"x" * 50)
    assert len(temps(server)) == len(before) + 1, "the chunks wait in the storage's tmp/"
    assert client.api("DELETE", upload).status_code == 204
    assert temps(server) == before and files_in(folder) == {}
    assert client.api("GET", upload).status_code == 404


@pytest.mark.parametrize(
    ("name", "size", "status", "message"),
    [
        pytest.param(
            "tool.exe", 10, 415, "files of type .exe are not accepted in mailbox 'drop", id="type"
        ),
        pytest.param(
            "huge.bin",
            31_000_000,
            413,
            "files larger than 30 MB are not accepted in mailbox 'drop",
            id="size",
        ),
        pytest.param("a/b.txt", 10, 400, "give the file a name without slashes", id="slash"),
        pytest.param("trailing.", 10, 400, "file names may not end with a dot", id="dot"),
    ],
)
def test_refused_uploads_say_why_and_store_nothing(server, name, size, status, message):
    _box, folder, link, base, client = _drop(server)
    before = temps(server)
    refused = client.start(base, name, size)
    assert refused.status_code == status
    assert message in refused.json()["error"]
    assert files_in(folder) == {} and temps(server) == before
    if status != 400:
        assert re.search(
            rf"access-refused .*actor='link-{link.id}'.*status={status}",
            server_log(server, until=rf"access-refused .*actor='link-{link.id}'"),
        )


def test_content_is_checked_when_the_upload_finishes(server):
    _box, folder, _link, base, client = _drop(server)
    before = temps(server)
    refused = client.upload(base, "fake.pdf", b"MZ\x90\x00" + os.urandom(5000))
    assert refused.status_code == 415
    assert "the content of 'fake.pdf' is not a .pdf file" in refused.json()["error"]
    assert files_in(folder) == {} and temps(server) == before
    assert client.upload(base, "real.pdf", b"%PDF-1.7\n" + b"x" * 100).status_code == 201


def test_more_bytes_than_announced_are_refused(server):
    _box, folder, _link, base, client = _drop(server)
    upload = f"{base}/uploads/{client.start(base, 'liar.bin', 10).json()['id']}"
    refused = client.api("PUT", f"{upload}?offset=0", body=b"x" * 11)
    assert refused.status_code == 400 and "more bytes" in refused.json()["error"]
    assert client.api("GET", upload).status_code == 404 and files_in(folder) == {}
    too_big = client.api("PUT", f"{upload}?offset=0", body=b"x" * (CHUNK + 1))
    assert too_big.status_code == 413


def test_the_quota_is_enforced_while_chunks_arrive(server):
    box, folder = mailbox(server, "quota")
    _link, token = make_link(server, box, "/", "drop")
    base = f"/s/{token}"
    client = LinkClient(server)
    client.get(base)
    first = client.start(base, "first.bin", 8_000_000)
    second = client.start(base, "second.bin", 8_000_000)
    assert first.status_code == second.status_code == 201, "each fits into an empty mailbox"
    one, two = (f"{base}/uploads/{r.json()['id']}" for r in (first, second))
    assert client.api("PUT", f"{one}?offset=0", body=b"1" * 8_000_000).status_code == 200
    assert client.api("POST", one).status_code == 201
    refused = client.api("PUT", f"{two}?offset=0", body=b"2" * 8_000_000)
    assert refused.status_code == 507
    assert "is full" in refused.json()["error"] and "nothing was stored" in refused.json()["error"]
    assert set(files_in(folder)) == {"first.bin"}


def test_an_existing_name_is_never_overwritten(server):
    _box, folder, _link, base, client = _drop(server)
    original = put(folder, "report.pdf", b"%PDF-1.4 the original")
    answer = client.upload(base, "report.pdf", b"%PDF-1.4 another one")
    assert answer.status_code == 201
    assert answer.json()["name"] == "report.pdf" and "stored_as" not in answer.json()
    assert (folder / "report.pdf").read_bytes() == original
    assert (folder / "report (2).pdf").read_bytes() == b"%PDF-1.4 another one"


def test_a_drop_link_shows_no_files_anywhere(server):
    _box, folder, _link, base, client = _drop(server)
    put(folder, "confidential.txt", b"secret")
    put(folder, "sub/inner.txt", b"secret")
    assert client.upload(base, "mine.txt", b"mine").status_code == 201
    for path in ("", "/files/confidential.txt", "/files/sub/", "/files/mine.txt", "/zip"):
        response = client.get(base + path)
        assert "confidential" not in response.text and "inner.txt" not in response.text
        if path:
            assert response.status_code == 404 and GONE in response.text
    assert "mine.txt" not in client.get(base).text, "not even the uploader's own files"
    into_sub = client.start(base, "x.txt", 1, folder="sub")
    assert into_sub.status_code == 404
    assert client.start(base, "x.txt", 1, folder="missing").json() == into_sub.json()
    other = LinkClient(server)
    other.get(base)
    upload = client.start(base, "x.txt", 1).json()["id"]
    assert other.api("GET", f"{base}/uploads/{upload}").status_code == 404, (
        "uploads are per browser"
    )
    assert client.api("GET", f"{base}/uploads/{upload}").status_code == 200


def test_the_upload_api_needs_the_page_csrf_token(server):
    _box, folder, _link, base, client = _drop(server)
    for csrf in ("", "forged", client.csrf[:-1]):
        refused = client.api(
            "POST", f"{base}/uploads", json={"name": "a.txt", "size": 1}, csrf=csrf
        )
        assert refused.status_code == 403
    form = requests.post(
        f"{server.url}{base}/uploads", data={"name": "a.txt", "size": "1"}, timeout=10
    )
    assert form.status_code == 403
    assert files_in(folder) == {}


def test_uploads_only_inside_the_upload_window(server):
    _box, folder, link, base, client = _drop(server, upload_window=timedelta(hours=1))
    page = client.get(base)
    assert "Files can be sent until" in page.text and 'type="file"' in page.text
    upload = f"{base}/uploads/{client.start(base, 'late.txt', 4).json()['id']}"
    change_link(server, link, upload_until=datetime.now(UTC) - timedelta(seconds=1))
    closed = client.get(base)
    assert closed.status_code == 200 and "This link no longer accepts files." in closed.text
    assert 'type="file"' not in closed.text
    refused = client.start(base, "a.txt", 1)
    assert refused.status_code == 403
    assert refused.json()["error"] == "This link no longer accepts files."
    assert client.api("PUT", f"{upload}?offset=0", body=b"late").status_code == 403
    assert files_in(folder) == {}


def test_write_link_lists_and_uploads_into_subfolders(server):
    box, folder = mailbox(server, "write")
    put(folder, "team/existing.txt", b"old")
    (folder / "team" / "in").mkdir()
    _link, token = make_link(server, box, "/team", "write")
    base = f"/s/{token}"
    client = LinkClient(server)
    page = client.get(base)
    assert "existing.txt" in page.text and 'id="upload-form"' in page.text
    assert 'data-folder=""' in page.text
    sub = client.get(f"{base}/files/in/")
    assert 'data-folder="in"' in sub.text
    answer = client.upload(base, "new.txt", b"new in sub", folder="in")
    assert answer.status_code == 201
    assert (folder / "team" / "in" / "new.txt").read_bytes() == b"new in sub"
    again = client.upload(base, "existing.txt", b"newer")
    assert again.json()["stored_as"] == "existing (2).txt"
    assert (folder / "team" / "existing.txt").read_bytes() == b"old"
    assert client.start(base, "x.txt", 1, folder="../").status_code == 404
    assert client.start(base, "x.txt", 1, folder="existing.txt").status_code == 404


def test_a_read_link_accepts_no_uploads(server):
    box, folder = mailbox(server, "readonly")
    put(folder, "r/a.txt", b"a")
    _link, token = make_link(server, box, "/r")
    client = LinkClient(server)
    page = client.get(f"/s/{token}")
    assert 'id="upload-form"' not in page.text
    client.csrf = client.csrf or ""
    # A page without the form has no data-csrf; the pre-login token is the same one.
    client.get("/login")
    refused = client.start(f"/s/{token}", "b.txt", 1)
    assert refused.status_code == 403
    assert refused.json()["error"] == "This link does not accept files."
    assert files_in(folder / "r") == {"a.txt": b"a"}


def test_unfinished_uploads_are_swept_when_the_server_starts_again(make_server):
    server = make_server("sweep", config=None)
    _box, folder = mailbox(server, "sweepdrop")
    _link, token = make_link(server, _box, "/", "drop")
    client = LinkClient(server)
    client.get(f"/s/{token}")
    upload = client.start(f"/s/{token}", "half.bin", 1000).json()["id"]
    assert client.api("PUT", f"/s/{token}/uploads/{upload}?offset=0", body=b"x" * 500)
    assert [name for name in temps(server) if name.endswith(".part")], "the bytes wait in tmp/"
    server.stop()
    server.start()
    assert temps(server) == [] and files_in(folder) == {}
    client = LinkClient(server)
    client.get(f"/s/{token}")
    gone = client.api("GET", f"/s/{token}/uploads/{upload}")
    assert gone.status_code == 404, "the upload must start again"


def test_idle_uploads_are_discarded(tmp_path):
    storage = FilesystemStorage(tmp_path / "storage")
    box = MailboxAccess(1, "box", "key", frozenset({"dropper"}))
    folder = storage.mailbox_dir("key")
    uploads = ResumableUploads(storage, PolicyEngine(), EventBus([]), idle_timeout=0.2)
    target = UploadTarget(7, Principal("link", "link-7"), box, "/", folder)
    upload = uploads.start(target, "idle.bin", 10, "owner", {})
    uploads.append(upload, "owner", 7, 0, [b"12345"], {})
    assert uploads.status(upload, "owner", 7) == (5, 10, False)
    with pytest.raises(UploadNotFound):
        uploads.status(upload, "someone else", 7)
    with pytest.raises(UploadNotFound):
        uploads.status(upload, "owner", 8)
    time.sleep(0.3)
    assert uploads.expire() == 1
    with pytest.raises(UploadNotFound):
        uploads.append(upload, "owner", 7, 5, [b"67890"], {})
    assert list(storage.tmp.iterdir()) == [] and list(folder.iterdir()) == []


def test_a_link_to_a_whole_mailbox_does_not_show_its_name(server):
    box, folder = mailbox(server, "wholebox")
    put(folder, "a.txt", b"a")
    _link, token = make_link(server, box)
    client = LinkClient(server)
    page = client.get(f"/s/{token}")
    assert page.status_code == 200 and "a.txt" in page.text
    assert box not in page.text and "Shared files" in page.text
    assert "Gedeelde bestanden" in client.get(f"/s/{token}?lang=nl").text
    archive = client.get(f"/s/{token}/zip")
    assert box not in archive.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
        assert opened.namelist() == ["files/a.txt"]


def test_a_dropper_can_say_when_their_file_goes(server):
    from davbox import file_index

    box, _folder, _link, base, client = _drop(server)
    day = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    for bad, reason in (("2020-01-01", "that time has passed already"), ("soon", "cannot read")):
        refused = client.api(
            "POST", f"{base}/uploads",
            json={"name": "a.txt", "size": 1, "folder": "", "available_until": bad},
        )  # fmt: skip
        assert refused.status_code == 400 and reason in refused.json()["error"]
    started = client.api(
        "POST", f"{base}/uploads",
        json={"name": "a.txt", "size": 1, "folder": "", "available_until": day},
    )  # fmt: skip
    assert started.status_code == 201
    url = f"{base}/uploads/{started.json()['id']}"
    assert client.api("PUT", f"{url}?offset=0", body=b"a").status_code == 200
    assert client.api("POST", url).status_code == 201
    until = file_index.available_until(server.database(), box, "/a.txt")
    assert until is not None and until.strftime("%Y-%m-%dT%H:%M:%S") == f"{day}T23:59:59"
