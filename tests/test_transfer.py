"""SecureTransfer: ``davbox send`` and ``davbox request`` against a real server, SMTP and gateway.

- send: the recipient gets one mail with the link (and the sender's message),
  then, on opening it, a second mail with a one-time code; nothing downloads
  before the code, a wrong code is refused and counted, the right one opens
  the link once (in that browser only); WebDAV through such a link is refused.
- send --phone: the code goes to the SMS gateway (an HTTP webhook) with the
  bearer token; a gateway that fails leaves no usable code, and the page says so.
- request: the person asked gets a drop link; what they upload lands in the
  folder and the requester is mailed about it.
- Every step is in the audit trail with the external person's address.
- Refusals (mail off, a bad address, no code where links need a password)
  read as one line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from davbox import accounts
from tests.davserver import PASSWORD, DavboxServer, free_port
from tests.smtpd import Received, SmtpServer
from tests.test_link_pages import LinkClient

GATEWAY_TOKEN = "gateway-bearer-token-for-tests"
CONFIG = """
server:
  public_url: http://127.0.0.1:{port}
mail:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  from_address: davbox@example.org
  poll_interval: 0.2
  retry_delay: 1
  retry_max_delay: 2
transfer:
  webhook_url: http://127.0.0.1:{gateway_port}/sms
  webhook_token: {token}
  webhook_text: "Uw davbox-code: {{code}}"
policies:
  - name: links-password-and-expiry
    type: links
    mailboxes: ["box"]
    permissions: [read]
    require_password: true
    max_expiry: 14d
  - name: strict-links
    type: links
    mailboxes: ["strict"]
    require_password: true
"""
CONTENT = b"%PDF-1.4 confidential report 2026\n"
CODE = re.compile(r"^\s+(\d{6})$", re.MULTILINE)


class Gateway:
    """An SMS gateway stand-in: a real HTTP server that keeps each POST (or answers 500)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.failing = False
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if gateway.failing:
                    self.send_response(500)
                else:
                    gateway.received.append((dict(self.headers), json.loads(body)))
                    self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    gw = Gateway()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer, gateway: Gateway
) -> Iterator[DavboxServer]:
    base = tmp_path_factory.mktemp("transfer")
    config = base / "davbox.yaml"
    srv = DavboxServer(base / "data", config=config)
    config.write_text(
        CONFIG.format(
            port=srv.port, smtp_port=smtp.port, gateway_port=gateway.port, token=GATEWAY_TOKEN
        )
    )
    srv.start()
    db = srv.database()
    accounts.add_user(db, "alice", PASSWORD, email="alice@example.org", display_name="Alice Smit")
    accounts.add_user(db, "noaddr", PASSWORD)
    srv.mailbox("box", alice="manager", noaddr="manager")
    srv.mailbox("strict", alice="manager")
    srv.mailbox("open", alice="manager")
    put = requests.put(
        srv.dav("box/report.pdf"), data=CONTENT, auth=("alice", PASSWORD), timeout=10
    )
    assert put.status_code == 201
    for folder in ("open/inkomend", "strict/in"):
        made = requests.request("MKCOL", srv.dav(folder), auth=("alice", PASSWORD), timeout=10)
        assert made.status_code == 201
    yield srv
    srv.stop()


def mails_to(
    smtp: SmtpServer, before: int, address: str, count: int = 1, about: str = ""
) -> list[Received]:
    """The mails to ``address`` (subject containing ``about``) since the ``before``-th,
    once ``count`` of them arrived."""
    deadline = time.monotonic() + 20
    while True:
        found = [
            m for m in smtp.messages[before:] if m.envelope_to == [address] and about in m.subject
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def link_of(out: str) -> tuple[int, str]:
    number = int(re.search(r"link (\d+)", out).group(1))  # type: ignore[union-attr]
    token = re.search(r"link: \S+/s/(\S+)", out).group(1)  # type: ignore[union-attr]
    return number, token


def records(server: DavboxServer, link_id: int) -> list[dict[str, Any]]:
    """The link's records: those naming it, and those of requests made through it."""
    out = server.cli("audit", "query", "--format", "json").stdout
    return [
        r for r in json.loads(out) if r.get("link_id") == link_id or r["actor"] == f"link-{link_id}"
    ]


def test_send_mails_the_link_then_a_code_that_opens_it_once(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    before = len(smtp.messages)
    out = server.cli(
        "send", "box/report.pdf", "--to", "jan@extern.example", "--name", "Jan",
        "--message", "Hierbij het rapport.", "--as", "alice",
    ).stdout  # fmt: skip
    assert "(code by mail)" in out
    link_id, token = link_of(out)
    (invitation,) = mails_to(smtp, before, "jan@extern.example")
    assert invitation.subject == "Alice Smit heeft u een bestand gestuurd"
    assert f"{server.url}/s/{token}" in invitation.text
    assert "Hierbij het rapport." in invitation.text
    assert "eenmalige code" in invitation.text
    assert "daarna zijn de bestanden weg.\nVoordat u kunt downloaden" in invitation.text
    assert not CODE.search(invitation.text)  # the code is never in the mail with the link

    jan = LinkClient(server)
    headers = {"Accept-Language": "en"}
    first = jan.request("GET", f"/s/{token}", headers=headers)
    assert first.status_code == 303 and first.headers["Location"].endswith(f"/s/{token}/code")
    early = jan.request("GET", f"/s/{token}/download", headers=headers)
    assert early.status_code == 303 and CONTENT not in early.content

    page = jan.request("GET", f"/s/{token}/code", headers=headers)
    assert page.status_code == 200
    assert "sent by mail to j***@extern.example" in page.text
    _, code_mail = mails_to(smtp, before, "jan@extern.example", 2)
    assert token not in code_mail.text
    code = CODE.search(code_mail.text).group(1)  # type: ignore[union-attr]

    # A reload does not send another code (one is pending); a wrong code is refused.
    assert jan.request("GET", f"/s/{token}/code", headers=headers).status_code == 200
    wrong = "000000" if code != "000000" else "111111"
    refused = jan.request(
        "POST", f"/s/{token}/code", data={"csrf": jan.csrf, "code": wrong}, headers=headers
    )
    assert refused.status_code == 401 and "That code is not right." in refused.text
    no_csrf = jan.request("POST", f"/s/{token}/code", data={"code": code}, headers=headers)
    assert no_csrf.status_code == 400

    opened = jan.request(
        "POST", f"/s/{token}/code", data={"csrf": jan.csrf, "code": code}, headers=headers
    )
    assert opened.status_code == 303, opened.text
    got = jan.request("GET", f"/s/{token}/download", headers=headers)
    assert got.status_code == 200 and got.content == CONTENT

    # The code worked once: another browser cannot use it, nor the link without one.
    other = LinkClient(server)
    other.request("GET", f"/s/{token}/code", headers=headers)
    again = other.request(
        "POST", f"/s/{token}/code", data={"csrf": other.csrf, "code": code}, headers=headers
    )
    assert again.status_code == 401
    assert other.request("GET", f"/s/{token}/download").status_code == 303

    # WebDAV cannot ask for a code: it is refused with the reason.
    dav = requests.get(f"{server.url}/s/{token}/dav/", timeout=10)
    assert dav.status_code == 403 and "one-time code" in dav.text

    kinds = [(r["kind"], r.get("outcome"), r.get("status")) for r in records(server, link_id)]
    assert ("link-created", None, None) in kinds
    # One code sent: the other browser came within a minute and got none of its own.
    assert kinds.count(("link-code-sent", None, 200)) == 1
    assert ("login-refused", "wrong-code", 401) in kinds
    assert ("login-refused", "code-expired", 401) in kinds
    assert ("login-succeeded", None, None) in kinds
    assert ("link-downloaded", None, 200) in kinds
    assert ("access-refused", None, 403) in kinds
    by_link = [r for r in records(server, link_id) if r["actor"] == f"link-{link_id}"]
    assert by_link and all(r["email"] == "jan@extern.example" for r in by_link)
    assert server.cli("audit", "verify").returncode == 0

    # The sender hears that the file was fetched (the link notifies its creator).
    assert mails_to(smtp, before, "alice@example.org", about="report.pdf")


def test_codes_by_phone_go_to_the_gateway(
    server: DavboxServer, smtp: SmtpServer, gateway: Gateway
) -> None:
    before = len(smtp.messages)
    out = server.cli(
        "send", "box/report.pdf", "--to", "piet@extern.example", "--phone", "+31612345678",
        "--lang", "en", "--as", "alice",
    ).stdout  # fmt: skip
    assert "(code by SMS)" in out
    _, token = link_of(out)
    (invitation,) = mails_to(smtp, before, "piet@extern.example")
    assert invitation.subject == "Alice Smit sent you a file"
    assert "by text message" in invitation.text

    piet = LinkClient(server)
    gateway.failing = True
    down = piet.request("GET", f"/s/{token}/code", headers={"Accept-Language": "en"})
    assert down.status_code == 503 and "could not be sent" in down.text
    assert gateway.received == []
    gateway.failing = False
    page = piet.request(
        "POST", f"/s/{token}/code", data={"csrf": piet.csrf, "resend": "1"},
        headers={"Accept-Language": "en"},
    )  # fmt: skip
    assert page.status_code == 200 and "text message to **********78" in page.text
    ((headers, body),) = gateway.received
    assert headers["Authorization"] == f"Bearer {GATEWAY_TOKEN}"
    assert body["to"] == "+31612345678"
    code = re.fullmatch(r"Uw davbox-code: (\d{6})", body["text"]).group(1)  # type: ignore[union-attr]
    too_soon = piet.request(
        "POST", f"/s/{token}/code", data={"csrf": piet.csrf, "resend": "1"},
        headers={"Accept-Language": "en"},
    )  # fmt: skip
    assert too_soon.status_code == 429 and len(gateway.received) == 1
    opened = piet.request("POST", f"/s/{token}/code", data={"csrf": piet.csrf, "code": code})
    assert opened.status_code == 303
    assert piet.request("GET", f"/s/{token}/download").content == CONTENT
    assert len(mails_to(smtp, before, "piet@extern.example")) == 1  # no code by mail


def test_request_mails_a_drop_link_and_tells_the_requester(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    before = len(smtp.messages)
    out = server.cli(
        "request", "open/inkomend", "--from", "kees@extern.example",
        "--message", "Stuur uw jaarstukken.", "--upload-window", "1h", "--as", "alice",
    ).stdout  # fmt: skip
    link_id, token = link_of(out)
    assert "uploads until:" in out
    (ask,) = mails_to(smtp, before, "kees@extern.example")
    assert ask.subject == "Alice Smit vraagt u een bestand te sturen"
    assert f"{server.url}/s/{token}" in ask.text and "Stuur uw jaarstukken." in ask.text

    kees = LinkClient(server)
    page = kees.request("GET", f"/s/{token}")
    assert page.status_code == 200  # a request link asks for no code
    done = kees.upload(f"/s/{token}", "jaarstukken.pdf", CONTENT)
    assert done.status_code == 201, done.text
    stored = requests.get(
        server.dav("open/inkomend/jaarstukken.pdf"), auth=("alice", PASSWORD), timeout=10
    )
    assert stored.content == CONTENT
    assert mails_to(smtp, before, "alice@example.org", about="jaarstukken.pdf")
    uploaded = [r for r in records(server, link_id) if r["kind"] == "link-uploaded"]
    assert [r["email"] for r in uploaded] == ["kees@extern.example"]


def run(data_dir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "davbox", "--data-dir", str(data_dir), "--config", str(config),
         *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_refusals_read_as_one_line(server: DavboxServer, tmp_path: Path) -> None:
    bad = server.cli(
        "send", "box/report.pdf", "--to", "not an address", "--as", "alice", check=False
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "is not a mail address" in bad.stderr
    plain = server.cli(
        "send", "strict/report.pdf", "--to", "x@extern.example", "--no-code", "--as", "alice",
        check=False,
    )  # fmt: skip
    assert plain.returncode == 1
    assert "need a password (or a one-time code)" in plain.stderr
    ask = server.cli(
        "request", "strict/in", "--from", "x@extern.example", "--as", "alice", check=False
    )
    assert ask.returncode == 1 and "need a password" in ask.stderr  # policies still rule
    nobody = server.cli(
        "request", "open/inkomend", "--from", "x@extern.example", "--as", "noaddr", check=False
    )
    assert nobody.returncode == 1 and "has no mail address" in nobody.stderr

    off = tmp_path / "no-mail.yaml"
    off.write_text("auth:\n  two_factor_for: []\n")
    refused = run(server.data_dir, off, "send", "box/report.pdf", "--to", "x@extern.example")
    assert refused.returncode == 1, refused.stdout
    assert refused.stderr.strip().endswith(
        "mail is off (no mail.host): the link could not reach anyone"
    )
    assert "Traceback" not in refused.stderr


def test_a_link_whose_mail_cannot_be_queued_is_revoked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from davbox import links
    from davbox.app import Runtime
    from davbox.config.schema import Settings
    from davbox.mail import Outbox
    from davbox.transfer import TransferService

    settings = Settings.model_validate({"mail": {"host": "127.0.0.1", "security": "none"}})
    runtime = Runtime.create(settings, tmp_path / "data")
    accounts.create_mailbox(runtime.db, "box")
    (runtime.storage.mailbox_dir(_key(runtime, "box")) / "f.pdf").write_bytes(CONTENT)

    def down(*_args: Any, **_kwargs: Any) -> int:
        raise OSError("the database went away")

    monkeypatch.setattr(Outbox, "enqueue", down)
    assert runtime.outbox is not None
    service = TransferService(runtime.shares, runtime.outbox, settings, "http://x")
    with pytest.raises(OSError):
        service.send(None, "box/f.pdf", to="jan@extern.example", code=False)
    (made,) = links.list_links(runtime.db)
    assert made.state() == "revoked"


def _key(runtime: Any, mailbox: str) -> str:
    from sqlalchemy import select

    from davbox.db.models import Mailbox

    with runtime.db.session() as session:
        key: str = session.execute(
            select(Mailbox.storage_key).where(Mailbox.name == mailbox)
        ).scalar_one()
    runtime.storage.mailbox_dir(key).mkdir(parents=True, exist_ok=True)
    return key
