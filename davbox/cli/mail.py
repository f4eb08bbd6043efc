"""``davbox mail outbox|test``: the mail queue and a check of the SMTP settings."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from davbox.cli import Context, fail, main


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@main.group()
def mail() -> None:
    """Outgoing mail: the queue (outbox) and a test of the SMTP settings."""


@mail.command("outbox")
@click.option(
    "--state",
    type=click.Choice(["queued", "sending", "sent", "failed"]),
    help="Only mails in this state.",
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.pass_obj
def mail_outbox(ctx: Context, state: str | None, limit: int) -> None:
    """Counts per state, then the newest mails: id, state, tries, times, recipient, subject."""
    from davbox.mail import Outbox

    outbox = Outbox(ctx.database())
    counts = outbox.counts()
    click.echo(" ".join(f"{name}={count}" for name, count in counts.items()))
    for row in outbox.rows(state, limit):
        due = _when(row.next_attempt_at) if row.state == "queued" else _when(row.sent_at)
        fields = [
            str(row.id),
            row.state,
            f"tries {row.attempts}",
            f"queued {_when(row.created_at)}",
            f"{'next' if row.state == 'queued' else 'sent'} {due}",
            row.recipient,
            row.template,
            row.subject,
        ]
        if row.last_error and row.state != "sent":
            fields.append(f"error: {row.last_error}")
        click.echo("\t".join(fields))


@mail.command("test")
@click.argument("address")
@click.option("--language", type=click.Choice(["nl", "en"]), help="Default: mail.language.")
@click.pass_obj
def mail_test(ctx: Context, address: str, language: str | None) -> None:
    """Send a test mail to ADDRESS now, straight to the SMTP server (not through the queue)."""
    from davbox.mail import MailTemplates
    from davbox.mail.outbox import check_address
    from davbox.mail.smtp import SmtpConnection, build_message, describe

    settings = ctx.settings.mail
    if settings.host is None:
        fail("mail.host is not set in the configuration")
    try:
        check_address(address)
    except ValueError as exc:
        fail(str(exc))
    rendered = MailTemplates().render("test", language or settings.language, {"site": "davbox"})
    message = build_message(
        settings,
        to=address,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=f"<davbox-test.{time.time_ns()}@{settings.from_address.rpartition('@')[2]}>",
    )
    try:
        with SmtpConnection(settings) as connection:
            connection.send(message)
    except Exception as exc:
        fail(f"sending to {address} through {settings.host}:{settings.smtp_port}: {describe(exc)}")
    click.echo(f"sent a test mail to {address} through {settings.host}:{settings.smtp_port}")
