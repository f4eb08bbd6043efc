"""``davbox send`` and ``davbox request``: SecureTransfer from the command line.

``send`` mails a person a read link to a file or folder (with a one-time code
asked first, by mail or by SMS gateway); ``request`` mails a person a link to
upload into a folder, and tells the requester when files arrive. Both print
the link's id and URL; the mails are sent by the running server's mail queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from davbox.accounts import AdminError
from davbox.cli import Context, fail, main
from davbox.links import parse_duration
from davbox.paths import base_url
from davbox.policies.base import Principal

if TYPE_CHECKING:
    from davbox.app import Runtime


def _creator(runtime: Runtime, as_user: str | None) -> Principal | None:
    if as_user is None:
        return None
    principal = runtime.access.principal_for(as_user)
    if principal is None:
        fail(f"no user named {as_user!r}")
    return principal


@main.command("send")
@click.argument("target", metavar="MAILBOX/PATH")
@click.option("--to", "to", required=True, help="The person's mail address.")
@click.option("--name", default="", help="The person's name (used in the mail).")
@click.option("--message", default="", help="A message for the person (in the mail and page).")
@click.option("--expires", help="How long the link works, e.g. 5d (default transfer.expires).")
@click.option(
    "--code/--no-code",
    default=None,
    help="Ask for a one-time code before downloading (default transfer.require_code).",
)
@click.option("--phone", help="Send the code to this phone number through the SMS gateway.")
@click.option("--lang", type=click.Choice(["nl", "en"]), help="Language of the mails.")
@click.option("--as", "as_user", help="Send as this account (its mailbox role must allow it).")
@click.pass_obj
def send(
    ctx: Context,
    target: str,
    to: str,
    name: str,
    message: str,
    expires: str | None,
    code: bool | None,
    phone: str | None,
    lang: str | None,
    as_user: str | None,
) -> None:
    """Mail a person a link to download a file or folder."""
    from davbox.app import Runtime
    from davbox.transfer import TransferService

    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    assert runtime.outbox is not None
    service = TransferService(runtime.shares, runtime.outbox, ctx.settings, base_url(ctx.settings))
    try:
        sent = service.send(
            _creator(runtime, as_user),
            target,
            to=to,
            name=name,
            message=message,
            expires=parse_duration(expires) if expires else None,
            code=code,
            phone=phone,
            language=lang,
        )
    except AdminError as exc:  # LinkError, TransferError, NotifyError
        fail(str(exc))
    link = sent.link
    how = {"": "no code", "mail": "code by mail", "webhook": "code by SMS"}[link.code_channel]
    click.echo(f"sent read link {link.id} to {to} ({how}); mail {sent.mail_id} queued")
    click.echo(f"link: {sent.url}")
    if link.expires_at:
        click.echo(f"expires: {link.expires_at:%Y-%m-%dT%H:%MZ}")


@main.command("request")
@click.argument("target", metavar="MAILBOX/FOLDER")
@click.option("--from", "from_", required=True, help="The mail address of the person asked.")
@click.option("--name", default="", help="The person's name (used in the mail).")
@click.option("--message", default="", help="A message for the person (in the mail and page).")
@click.option("--upload-window", help="How long uploads are taken, e.g. 1h (default: its life).")
@click.option("--expires", help="How long the link lives, e.g. 5d (default transfer.expires).")
@click.option("--lang", type=click.Choice(["nl", "en"]), help="Language of the mail.")
@click.option("--as", "as_user", required=True, help="The account asking (told when files arrive).")
@click.pass_obj
def request(
    ctx: Context,
    target: str,
    from_: str,
    name: str,
    message: str,
    upload_window: str | None,
    expires: str | None,
    lang: str | None,
    as_user: str,
) -> None:
    """Mail a person a link to upload files into a folder."""
    from davbox.app import Runtime
    from davbox.transfer import TransferService

    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    assert runtime.outbox is not None
    service = TransferService(runtime.shares, runtime.outbox, ctx.settings, base_url(ctx.settings))
    creator = _creator(runtime, as_user)
    assert creator is not None
    try:
        asked = service.request(
            creator,
            target,
            from_=from_,
            name=name,
            message=message,
            upload_window=parse_duration(upload_window) if upload_window else None,
            expires=parse_duration(expires) if expires else None,
            language=lang,
        )
    except AdminError as exc:
        fail(str(exc))
    link = asked.link
    click.echo(f"asked {from_} for files: drop link {link.id}; mail {asked.mail_id} queued")
    click.echo(f"link: {asked.url}")
    if link.upload_until:
        click.echo(f"uploads until: {link.upload_until:%Y-%m-%dT%H:%MZ}")
