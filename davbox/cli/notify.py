"""``davbox notify ...`` and ``davbox mailbox set``: who is mailed about which files.

Subscriptions are per account and mailbox: ``--on placed`` (new files) and
``--on fetched`` (files the account placed were downloaded), each
``--every immediate``, ``hourly`` or ``daily`` (a digest). A sensitive
mailbox's notices name no files. ``notify digest --now`` sends the pending
digests at once (the server otherwise sends them every hour / day).
"""

from __future__ import annotations

import click

from davbox.cli import Context, fail, main
from davbox.cli.admin import mailbox
from davbox.notify import subscriptions
from davbox.notify.subscriptions import EVENTS, EVERY, NotifyError


@main.group()
def notify() -> None:
    """Notification mails: subscriptions, addresses, link notices, digests."""


@notify.command("subscribe")
@click.argument("user")
@click.argument("mailbox_name", metavar="MAILBOX")
@click.option(
    "--on",
    "events",
    type=click.Choice(EVENTS),
    multiple=True,
    required=True,
    help="placed: new files; fetched: files this user placed were downloaded (repeatable).",
)
@click.option("--every", type=click.Choice(EVERY), default="immediate", show_default=True)
@click.pass_obj
def notify_subscribe(
    ctx: Context, user: str, mailbox_name: str, events: tuple[str, ...], every: str
) -> None:
    """Mail USER about files in MAILBOX."""
    db = ctx.database()
    for event in dict.fromkeys(events):
        try:
            new = subscriptions.subscribe(db, user, mailbox_name, event, every)
        except NotifyError as exc:
            fail(str(exc))
        verb = "subscribed" if new else "changed"
        click.echo(f"{verb}: {user} on {event} in {mailbox_name}, {every}")


@notify.command("unsubscribe")
@click.argument("user")
@click.argument("mailbox_name", metavar="[MAILBOX]", required=False)
@click.option("--on", "event", type=click.Choice(EVENTS), help="Only this event.")
@click.pass_obj
def notify_unsubscribe(
    ctx: Context, user: str, mailbox_name: str | None, event: str | None
) -> None:
    """Stop mailing USER (about MAILBOX only, or everything)."""
    removed = subscriptions.unsubscribe(ctx.database(), user, mailbox_name, event)
    click.echo(f"removed {removed} subscription(s) of {user}")


@notify.command("list")
@click.option("--user", help="Only this account's subscriptions.")
@click.option("--mailbox", "mailbox_name", help="Only subscriptions to this mailbox.")
@click.pass_obj
def notify_list(ctx: Context, user: str | None, mailbox_name: str | None) -> None:
    """Subscriptions: user, mailbox, event, frequency, address."""
    for row in subscriptions.list_subscriptions(ctx.database(), user, mailbox_name):
        fields = [row.user, row.mailbox, row.event, row.every, row.email or "(no address)"]
        click.echo("\t".join(fields))


@notify.command("address")
@click.argument("user")
@click.argument("address")
@click.pass_obj
def notify_address(ctx: Context, user: str, address: str) -> None:
    """Set the mail address USER is notified at ("-" removes it)."""
    try:
        subscriptions.set_address(ctx.database(), user, None if address == "-" else address)
    except NotifyError as exc:
        fail(str(exc))
    click.echo(f"{user}: mail address {'removed' if address == '-' else address}")


@notify.command("language")
@click.argument("user")
@click.argument("language", type=click.Choice(["nl", "en", "default"]))
@click.pass_obj
def notify_language(ctx: Context, user: str, language: str) -> None:
    """Language of USER's mails (default: mail.language)."""
    subscriptions.set_language(ctx.database(), user, None if language == "default" else language)
    click.echo(f"{user}: mails in {language}")


def parse_link_notices(text: str) -> tuple[bool, bool]:
    """ "uploads,downloads" -> (True, True); "none" -> (False, False)."""
    parts = {p.strip() for p in text.split(",") if p.strip()}
    if parts == {"none"}:
        return False, False
    unknown = parts - {"uploads", "downloads"}
    if unknown or not parts:
        raise click.BadParameter(
            f"use uploads, downloads, uploads,downloads or none (got {text!r})"
        )
    return "uploads" in parts, "downloads" in parts


@notify.command("link")
@click.argument("link_id", type=int)
@click.option("--on", "notices", required=True, metavar="uploads,downloads|none")
@click.pass_obj
def notify_link(ctx: Context, link_id: int, notices: str) -> None:
    """Mail a link's creator about each drop and/or download through it."""
    uploads, downloads = parse_link_notices(notices)
    try:
        subscriptions.set_link_notify(ctx.database(), link_id, uploads=uploads, downloads=downloads)
    except NotifyError as exc:
        fail(str(exc))
    on = [name for name, yes in (("uploads", uploads), ("downloads", downloads)) if yes]
    click.echo(f"link {link_id}: notices on {','.join(on) or 'nothing'}")


@notify.command("digest")
@click.option("--now", is_flag=True, required=True, help="Send the pending digests now.")
@click.option(
    "--every", type=click.Choice(["hourly", "daily", "all"]), default="all", show_default=True
)
@click.pass_obj
def notify_digest(ctx: Context, now: bool, every: str) -> None:
    """Queue the pending digest mails now (the server sends them)."""
    from davbox.mail import Outbox
    from davbox.notify.digest import FREQUENCIES, send_digests

    db = ctx.database()
    outbox = Outbox(db, sender_domain=ctx.settings.mail.from_address.rpartition("@")[2])
    for frequency in FREQUENCIES if every == "all" else (every,):
        count = send_digests(db, outbox, ctx.settings, frequency)
        click.echo(f"{frequency}: queued {count} digest mail(s)")


@mailbox.command("set")
@click.argument("mailbox_name", metavar="MAILBOX")
@click.option(
    "--sensitive/--not-sensitive",
    default=None,
    help="Sensitive: notifications name no files, only counts and a link to log in.",
)
@click.pass_obj
def mailbox_set(ctx: Context, mailbox_name: str, sensitive: bool | None) -> None:
    """Change a mailbox's settings."""
    if sensitive is None:
        fail("nothing to change (use --sensitive or --not-sensitive)")
    subscriptions.set_sensitive(ctx.database(), mailbox_name, sensitive)
    click.echo(f"mailbox {mailbox_name}: {'sensitive' if sensitive else 'not sensitive'}")
