"""Outgoing mail against a real SMTP server (aiosmtpd, started by the tests).

- The outbox renders at ``enqueue`` (unknown templates, missing values and
  bad addresses raise there) and the sender delivers what is queued: the
  right recipient, subject and Message-ID, ``Auto-Submitted``; bodies are
  emptied once sent.
- SMTP down: mails wait, are retried with growing delays and arrive once
  the server is back, each exactly once; two senders on one database never
  send a mail twice.
- A permanent refusal (550) is marked failed after one try and not retried;
  a temporary one (450) is retried.
- STARTTLS with a checked certificate and SMTP login work; the password
  appears in no log line.
- A running ``davbox serve`` sends mails that another process queued, and
  ``davbox mail test`` / ``davbox mail outbox`` report what happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from davbox.certs import write_self_signed
from davbox.config.schema import MailSettings
from davbox.db import Database
from davbox.mail import Outbox, TemplateProblem
from davbox.mail.sender import MailSender, backoff
from tests.davserver import DavboxServer
from tests.smtpd import SmtpServer


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'mail.db'}")
    database.upgrade()
    yield database
    database.dispose()


def settings_for(smtp: SmtpServer, **overrides: object) -> MailSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "none",
        "from_address": "davbox@example.org",
        "timeout": 5,
        "poll_interval": 0.2,
        "retry_delay": 1,
        "retry_max_delay": 1,
        **overrides,
    }
    return MailSettings.model_validate(values)


def queue_test_mails(outbox: Outbox, count: int, prefix: str = "user") -> list[int]:
    return [
        outbox.enqueue(
            to=f"{prefix}{i}@example.org", template="test", language="en", context={"site": "box"}
        )
        for i in range(count)
    ]


def test_queued_mail_is_delivered_once_with_its_headers(smtp: SmtpServer, db: Database) -> None:
    outbox = Outbox(db, sender_domain="example.org")
    sender = MailSender(outbox, settings_for(smtp))
    sender.start()
    try:
        mail_id = outbox.enqueue(
            to="alice@example.org", template="test", language="nl", context={"site": "davbox"}
        )
        (received,) = smtp.wait_for(1)
    finally:
        sender.stop()
    assert received.envelope_to == ["alice@example.org"]
    assert received.subject == "davbox: testbericht"
    assert received.message["From"] == "davbox@example.org"
    assert received.message["Auto-Submitted"] == "auto-generated"
    assert received.message["Message-ID"].endswith("@example.org>")
    assert "Dit is een testbericht van davbox." in received.text
    (row,) = outbox.rows()
    assert (row.id, row.state, row.attempts, row.last_error) == (mail_id, "sent", 1, "")
    assert outbox.counts() == {"queued": 0, "sending": 0, "sent": 1, "failed": 0}
    with db.engine.connect() as conn:
        text = conn.exec_driver_sql("SELECT text FROM mail_outbox").scalar()
    assert text == "", "a sent mail's body is not kept"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"template": "nonesuch", "language": "en", "context": {}},
            "no mail template 'nonesuch' in 'en'",
            id="unknown-template",
        ),
        pytest.param(
            {"template": "test", "language": "de", "context": {"site": "x"}},
            "unknown language 'de' (known: nl, en)",
            id="unknown-language",
        ),
        pytest.param(
            {"template": "test", "language": "en", "context": {}},
            "mail template test.en: 'site' is undefined",
            id="missing-value",
        ),
        pytest.param(
            {"template": "../x", "language": "en", "context": {}},
            "'../x' is not a template name",
            id="path-as-name",
        ),
    ],
)
def test_enqueue_refuses_what_cannot_be_rendered(
    db: Database, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TemplateProblem) as raised:
        Outbox(db).enqueue(to="a@example.org", **kwargs)  # type: ignore[arg-type]
    assert str(raised.value) == message
    assert Outbox(db).counts()["queued"] == 0


@pytest.mark.parametrize(
    "address",
    ["", "alice", "a@b@example.org", "a@example.org\r\nBcc: x@evil.example", "A <a@x.org>"],
)
def test_enqueue_refuses_a_bad_address(db: Database, address: str) -> None:
    with pytest.raises(ValueError, match="is not a mail address"):
        Outbox(db).enqueue(to=address, template="test", language="en", context={"site": "x"})


def test_subject_cannot_carry_a_header(db: Database) -> None:
    outbox = Outbox(db)
    outbox.enqueue(
        to="a@example.org", template="test", language="en", context={"site": "x\r\nBcc: e@v.il"}
    )
    (row,) = outbox.rows()
    assert row.subject == "x Bcc: e@v.il: test message"


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    settings = MailSettings(retry_delay=60, retry_max_delay=3600)
    assert [backoff(settings, n, lambda: 1.0) for n in (1, 2, 3, 7, 8, 50)] == [
        60,
        120,
        240,
        3600,
        3600,
        3600,
    ]
    assert [backoff(settings, n, lambda: 0.0) for n in (1, 2, 8)] == [30, 60, 1800]


def test_smtp_down_mails_wait_and_arrive_once_when_it_returns(
    smtp: SmtpServer, db: Database
) -> None:
    smtp.stop()
    outbox = Outbox(db)
    sender = MailSender(outbox, settings_for(smtp))
    sender.start()
    try:
        started = time.monotonic()
        ids = queue_test_mails(outbox, 5)
        assert time.monotonic() - started < 2, "queueing does not wait for SMTP"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and min(r.attempts for r in outbox.rows()) < 2:
            time.sleep(0.1)
        rows = outbox.rows()
        assert {r.state for r in rows} <= {"queued", "sending"}
        assert all(r.attempts >= 2 for r in rows), "retried while down"
        assert all("ConnectionRefusedError" in r.last_error for r in rows if r.state == "queued")
        smtp.start()
        received = smtp.wait_for(5)
    finally:
        sender.stop()
    assert len(smtp.settle(1.5)) == 5
    assert sorted(r.envelope_to[0] for r in received) == [f"user{i}@example.org" for i in range(5)]
    assert len({r.message["Message-ID"] for r in received}) == 5
    assert {r.id for r in outbox.rows()} == set(ids)
    assert outbox.counts()["sent"] == 5


def test_two_senders_on_one_database_send_each_mail_once(smtp: SmtpServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = Database(url), Database(url)
    first.upgrade()
    try:
        queue_test_mails(Outbox(first), 60)
        senders = [
            MailSender(Outbox(database), settings_for(smtp), batch=5)
            for database in (first, second)
        ]
        threads = [threading.Thread(target=_drain, args=(s,)) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        received = smtp.wait_for(60)
        assert len(smtp.settle(0.5)) == 60
        counts = Counter(r.envelope_to[0] for r in received)
        assert set(counts.values()) == {1}, "no mail sent twice"
        assert len(counts) == 60
    finally:
        first.dispose()
        second.dispose()


def _drain(sender: MailSender) -> None:
    while sender.run_once():
        pass


def test_permanent_refusal_is_not_retried_and_a_temporary_one_is(
    smtp: SmtpServer, db: Database
) -> None:
    outbox = Outbox(db)
    refused = outbox.enqueue(
        to="refuse@example.org", template="test", language="en", context={"site": "x"}
    )
    busy = outbox.enqueue(
        to="busy@example.org", template="test", language="en", context={"site": "x"}
    )
    fine = outbox.enqueue(
        to="fine@example.org", template="test", language="en", context={"site": "x"}
    )
    sender = MailSender(outbox, settings_for(smtp))
    sender.start()
    try:
        smtp.wait_for(1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = {r.id: r for r in outbox.rows()}
            if rows[busy].attempts >= 3:
                break
            time.sleep(0.1)
    finally:
        sender.stop()
    rows = {r.id: r for r in outbox.rows()}
    assert (rows[refused].state, rows[refused].attempts) == ("failed", 1)
    assert rows[refused].last_error == "recipient refused: 550 5.1.1 no such mailbox here"
    assert rows[busy].state in ("queued", "sending") and rows[busy].attempts >= 3
    assert "450" in rows[busy].last_error
    assert rows[fine].state == "sent"
    assert [r.envelope_to for r in smtp.messages] == [["fine@example.org"]]


def test_mail_given_up_after_give_up_after(smtp: SmtpServer, db: Database) -> None:
    outbox = Outbox(db)
    (mail_id,) = queue_test_mails(outbox, 1, prefix="busy")
    sender = MailSender(outbox, settings_for(smtp, give_up_after=60))
    sender.run_once(now=time.time() + 120)
    (row,) = outbox.rows()
    assert (row.id, row.state) == (mail_id, "failed")
    assert row.last_error.startswith("gave up after 1 tries: SMTPRecipientsRefused") or (
        row.last_error.startswith("gave up after 1 tries: recipient refused: 450")
    )


def test_starttls_login_and_the_password_is_never_logged(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "smtp-Secret-4711"
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(["127.0.0.1"], cert, key)
    smtp = SmtpServer(auth=("mailer", secret), tls=(cert, key)).start()
    tls = {"security": "starttls", "ca_file": str(cert)}
    try:
        outbox = Outbox(db)
        queue_test_mails(outbox, 1)
        wrong = MailSender(
            outbox,
            settings_for(smtp, **tls, username="mailer", password=SecretStr("wrong-" + secret)),
        )
        caplog.set_level(logging.DEBUG)
        wrong.run_once()
        (row,) = outbox.rows()
        assert row.state == "queued" and "535" in row.last_error, "a refused login is retried"
        right = settings_for(smtp, **tls, username="mailer", password=SecretStr(secret))
        MailSender(outbox, right).run_once(now=time.time() + 5)
        smtp.wait_for(1)
        assert outbox.rows()[0].state == "sent"
    finally:
        smtp.stop()
    assert secret not in caplog.text
    assert secret not in repr(right)


def test_server_sends_what_another_process_queued(smtp: SmtpServer, tmp_path: Path) -> None:
    config = tmp_path / "davbox.yaml"
    config.write_text(
        f"mail:\n  host: 127.0.0.1\n  port: {smtp.port}\n  security: none\n"
        "  from_address: box@example.org\n  poll_interval: 0.2\n"
    )
    server = DavboxServer(tmp_path / "data", config=config).start()
    try:
        Outbox(server.database()).enqueue(
            to="bob@example.org", template="test", language="en", context={"site": "davbox"}
        )
        (received,) = smtp.wait_for(1)
        assert received.subject == "davbox: test message"
        out = server.cli("mail", "outbox").stdout.splitlines()
        assert out[0] == "queued=0 sending=0 sent=1 failed=0"
        assert (
            "\tsent\ttries 1\t" in out[1]
            and "bob@example.org\ttest\tdavbox: test message" in out[1]
        )
        tested = server.cli("mail", "test", "carol@example.org", "--language", "nl")
        assert (
            tested.stdout
            == f"sent a test mail to carol@example.org through 127.0.0.1:{smtp.port}\n"
        )
        assert smtp.wait_for(2)[1].subject == "davbox: testbericht"
        smtp.stop()
        failed = server.cli("mail", "test", "carol@example.org", check=False)
        assert failed.returncode == 1
        assert failed.stderr.startswith(
            f"davbox: error: sending to carol@example.org through 127.0.0.1:{smtp.port}: "
            "ConnectionRefusedError"
        )
    finally:
        server.stop()
