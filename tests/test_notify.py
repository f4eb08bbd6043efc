"""Notification mails from a real server to a real SMTP server (aiosmtpd).

- Subscribers hear of new files (in Dutch or English, by their choice),
  never of their own uploads; placers hear that their file was fetched;
  mails name the file but carry neither its content nor any password or
  link token. A sensitive mailbox's mails name no file at all.
- Hourly digests gather several uploads into one mail, sent when the
  digest job runs (``davbox notify digest --now``), and only once.
- A link made with ``--notify uploads,downloads`` mails its creator about
  each drop and download through it.
- SMTP down during uploads: the uploads are as quick as ever and all
  succeed; once the SMTP server is back on the same port, every mail
  arrives, none twice.
- A throttled account's owner is warned once per throttle window.
- Refusals of ``davbox notify`` read as one line.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from davbox import accounts
from tests.davserver import PASSWORD, DavboxServer
from tests.smtpd import Received, SmtpServer

CONFIG = """
server:
  public_url: http://127.0.0.1:{port}
auth:
  throttle_account_failures: 3
  throttle_address_failures: 100000
mail:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  from_address: davbox@example.org
  poll_interval: 0.2
  retry_delay: 1
  retry_max_delay: 2
"""
REFRESH = 1.3  # the sink re-reads subscriptions within a second of a change
CONTENT = b"CONFIDENTIAL-CONTENT-7f3a"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path: Path, smtp: SmtpServer) -> Iterator[DavboxServer]:
    config = tmp_path / "davbox.yaml"
    srv = DavboxServer(tmp_path / "data", config=config)
    config.write_text(CONFIG.format(port=srv.port, smtp_port=smtp.port))
    srv.start()
    db = srv.database()
    for name, language in (("boss", None), ("rita", "en"), ("eve", None), ("mute", None)):
        accounts.add_user(db, name, PASSWORD, email=f"{name}@example.org", display_name=name)
        if language:
            srv.cli("notify", "language", name, language)
    accounts.add_user(db, "noaddr", PASSWORD)
    srv.mailbox("box", boss="manager", rita="reader", eve="dropper", mute="member", noaddr="member")
    yield srv
    srv.stop()


def put(server: DavboxServer, user: str, path: str, data: bytes = CONTENT) -> None:
    answer = requests.put(server.dav(path), data=data, auth=(user, PASSWORD), timeout=10)
    assert answer.status_code in (201, 204), answer.text


def get(server: DavboxServer, user: str, path: str) -> None:
    answer = requests.get(server.dav(path), auth=(user, PASSWORD), timeout=10)
    assert answer.status_code == 200, answer.text


def to(messages: list[Received], address: str) -> list[Received]:
    return [m for m in messages if m.envelope_to == [address]]


def assert_clean(message: Received, *secrets: str) -> None:
    raw = message.raw.decode("utf-8", "replace")
    for secret in (CONTENT.decode(), PASSWORD, *secrets):
        assert secret not in raw


def test_new_file_mails_subscribers_in_their_language(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    server.cli("notify", "subscribe", "boss", "box", "--on", "placed")
    server.cli("notify", "subscribe", "rita", "box", "--on", "placed")
    time.sleep(REFRESH)
    put(server, "eve", "box/report-2026.pdf")
    received = smtp.wait_for(2)
    (boss,) = to(received, "boss@example.org")
    (rita,) = to(received, "rita@example.org")
    assert boss.subject == "Nieuw bestand in postbus box: report-2026.pdf"
    assert rita.subject == "New file in mailbox box: report-2026.pdf"
    assert "eve heeft een bestand geplaatst in postbus box:" in boss.text
    assert "  /report-2026.pdf\n" in boss.text
    assert f"Log in om het op te halen: {server.url}/login" in boss.text
    assert "eve placed a file in mailbox box:" in rita.text
    for message in received:
        assert_clean(message)
    # The uploader is not told of their own upload; others are.
    put(server, "boss", "box/minutes.txt")
    received = smtp.wait_for(3)
    assert [m.subject for m in received[2:]] == ["New file in mailbox box: minutes.txt"]
    assert len(smtp.settle(1)) == 3


def test_sensitive_mailbox_mails_name_no_file(server: DavboxServer, smtp: SmtpServer) -> None:
    assert server.cli("mailbox", "set", "box", "--sensitive").stdout == "mailbox box: sensitive\n"
    server.cli("notify", "subscribe", "boss", "box", "--on", "placed")
    time.sleep(REFRESH)
    put(server, "eve", "box/salaris-jansen-2026.xlsx")
    (mail,) = smtp.wait_for(1)
    assert mail.subject == "Nieuw bestand in postbus box"
    assert "Er is een nieuw bestand geplaatst in postbus box." in mail.text
    assert_clean(mail, "salaris", "jansen", "xlsx", "eve")


def test_placer_hears_when_their_file_is_fetched(server: DavboxServer, smtp: SmtpServer) -> None:
    server.cli("notify", "subscribe", "eve", "box", "--on", "fetched")
    server.cli("notify", "subscribe", "boss", "box", "--on", "fetched")
    time.sleep(REFRESH)
    put(server, "eve", "box/aanvraag.pdf")
    get(server, "boss", "box/aanvraag.pdf")
    (mail,) = smtp.wait_for(1)
    assert mail.envelope_to == ["eve@example.org"]
    assert mail.subject == "Opgehaald uit postbus box: aanvraag.pdf"
    assert "boss heeft een bestand opgehaald dat u in postbus box plaatste:" in mail.text
    put(server, "boss", "box/own.txt")
    get(server, "boss", "box/own.txt")  # one's own download is no news
    assert len(smtp.settle(1.5)) == 1


def test_hourly_digest_gathers_uploads_into_one_mail(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    server.cli("notify", "subscribe", "rita", "box", "--on", "placed", "--every", "hourly")
    time.sleep(REFRESH)
    for name in ("a.txt", "b.txt", "c.txt"):
        put(server, "eve", f"box/{name}")
    assert smtp.settle(1) == [], "digest subscribers get no immediate mail"
    out = server.cli("notify", "digest", "--now").stdout
    assert out == "hourly: queued 1 digest mail(s)\ndaily: queued 0 digest mail(s)\n"
    (mail,) = smtp.wait_for(1)
    assert mail.envelope_to == ["rita@example.org"]
    assert mail.subject == "davbox: 3 new files (past hour)"
    lines = [line.strip() for line in mail.text.splitlines() if line.strip().startswith("new:")]
    assert [line.split(" (")[0] for line in lines] == [
        "new:     /a.txt",
        "new:     /b.txt",
        "new:     /c.txt",
    ]
    again = server.cli("notify", "digest", "--now").stdout
    assert again.startswith("hourly: queued 0 digest mail(s)")
    assert len(smtp.settle(1)) == 1


def test_link_creator_is_told_of_drops_and_downloads(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    made = requests.request("MKCOL", server.dav("box/in"), auth=("boss", PASSWORD), timeout=10)
    assert made.status_code == 201
    out = server.cli(
        "share",
        "create",
        "box/in",
        "--permission",
        "write",
        "--as",
        "boss",
        "--notify",
        "uploads,downloads",
        "--label",
        "Aanlevering",
    ).stdout
    link_id = re.search(r"created write link (\d+)", out).group(1)  # type: ignore[union-attr]
    webdav = re.search(r"webdav: (\S+)", out).group(1)  # type: ignore[union-attr]
    token = re.search(r"/s/([^/\s]+)", out).group(1)  # type: ignore[union-attr]
    time.sleep(REFRESH)
    dropped = requests.put(webdav + "bijlage.pdf", data=CONTENT, timeout=10)
    assert dropped.status_code == 201
    (mail,) = smtp.wait_for(1)
    assert mail.envelope_to == ["boss@example.org"]
    assert mail.subject == f"Nieuw bestand via uw deellink {link_id}: bijlage.pdf"
    assert f"Via uw deellink {link_id} (Aanlevering) is een bestand geplaatst" in mail.text
    fetched = requests.get(webdav + "bijlage.pdf", timeout=10)
    assert fetched.status_code == 200 and fetched.content == CONTENT
    second = smtp.wait_for(2)[1]
    assert second.subject == f"Gedownload via uw deellink {link_id}: bijlage.pdf"
    for message in smtp.settle(1):
        assert_clean(message, token)


def test_smtp_down_uploads_unaffected_and_mails_follow(
    server: DavboxServer, smtp: SmtpServer
) -> None:
    server.cli("notify", "subscribe", "boss", "box", "--on", "placed")
    time.sleep(REFRESH)
    smtp.stop()
    durations = []
    for i in range(12):
        started = time.monotonic()
        put(server, "eve", f"box/while-down-{i:02}.txt")
        durations.append(time.monotonic() - started)
    assert max(durations) < 1.0, durations
    outbox = server.cli("mail", "outbox").stdout.splitlines()
    assert re.match(r"queued=\d+ sending=\d+ sent=0 failed=0", outbox[0]), outbox[0]
    time.sleep(1.5)  # let the sender fail and back off at least once
    assert "ConnectionRefusedError" in server.cli("mail", "outbox").stdout
    smtp.start()
    received = smtp.wait_for(12, timeout=30)
    assert len(smtp.settle(3)) == 12
    subjects = Counter(m.subject for m in received)
    assert subjects == Counter(
        f"Nieuw bestand in postbus box: while-down-{i:02}.txt" for i in range(12)
    )
    assert server.cli("mail", "outbox").stdout.startswith("queued=0 sending=0 sent=12 failed=0")


def test_throttled_account_owner_is_warned_once(server: DavboxServer, smtp: SmtpServer) -> None:
    statuses = [
        requests.get(server.dav("box/"), auth=("mute", f"wrong-{i}"), timeout=30).status_code
        for i in range(6)
    ]
    assert 429 in statuses, statuses
    (mail,) = smtp.wait_for(1)
    assert mail.envelope_to == ["mute@example.org"]
    assert mail.subject == "Inloggen op uw account mute wordt afgeremd"
    assert "De laatste\npoging kwam van adres 127.0.0.1." in mail.text
    assert_clean(mail, "wrong-")
    requests.get(server.dav("box/"), auth=("mute", "wrong-again"), timeout=30)
    assert len(smtp.settle(1.5)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ("notify", "subscribe", "eve", "box", "--on", "placed"),
            "'eve' may only drop files in 'box', so cannot be told about new files",
            id="dropper-placed",
        ),
        pytest.param(
            ("notify", "subscribe", "noaddr", "box", "--on", "placed"),
            "'noaddr' has no mail address (davbox notify address noaddr ...)",
            id="no-address",
        ),
        pytest.param(
            ("share", "create", "box", "--permission", "drop", "--notify", "uploads"),
            "--notify needs --as USER: the link's creator is the one notified",
            id="link-notify-without-creator",
        ),
        pytest.param(
            ("notify", "address", "boss", "not an address"),
            "'not an address' is not a mail address",
            id="bad-address",
        ),
    ],
)
def test_refusals_are_one_line(server: DavboxServer, args: tuple[str, ...], message: str) -> None:
    result = server.cli(*args, check=False)
    assert result.returncode == 1, result.stdout
    assert result.stderr == f"davbox: error: {message}\n"


def test_subscriptions_listed_changed_and_removed(server: DavboxServer) -> None:
    server.cli("notify", "subscribe", "boss", "box", "--on", "placed", "--on", "fetched")
    changed = server.cli(
        "notify", "subscribe", "boss", "box", "--on", "fetched", "--every", "daily"
    )
    assert changed.stdout == "changed: boss on fetched in box, daily\n"
    assert server.cli("notify", "list").stdout == (
        "boss\tbox\tfetched\tdaily\tboss@example.org\n"
        "boss\tbox\tplaced\timmediate\tboss@example.org\n"
    )
    removed = server.cli("notify", "unsubscribe", "boss", "box", "--on", "placed")
    assert removed.stdout == "removed 1 subscription(s) of boss\n"
    assert server.cli("notify", "list", "--user", "boss").stdout.count("\n") == 1
