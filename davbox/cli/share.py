"""``davbox share create|list|revoke``: share links from the command line.

``create`` prints the link's URL (``<public URL>/s/<token>``) and, for WebDAV
programs, its WebDAV address. Without ``--as`` the link is made by the
administrator (no mailbox role needed); ``links`` policies apply either way.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from davbox import links
from davbox.cli import Context, fail, main, read_password_stdin
from davbox.links import Link, LinkError
from davbox.paths import base_url


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") if value else "-"


def _describe(link: Link, url: str) -> str:
    limits = []
    if link.max_downloads is not None:
        limits.append(f"downloads {link.downloads}/{link.max_downloads}")
    if link.upload_until is not None:
        limits.append(f"uploads until {_when(link.upload_until)}")
    if link.has_password:
        limits.append("password")
    return "\t".join(
        [
            str(link.id),
            f"{link.mailbox}{link.path if link.path != '/' else '/'}",
            link.permission,
            link.state(),
            f"expires {_when(link.expires_at)}",
            ", ".join(limits) or "-",
            link.label or "-",
            url,
        ]
    )


@main.group()
def share() -> None:
    """Share links for people without an account."""


@share.command("create")
@click.argument("target", metavar="MAILBOX/PATH")
@click.option(
    "--permission",
    type=click.Choice(["read", "drop", "write"]),
    required=True,
    help="read: list and download; drop: upload only, see nothing; write: read and change.",
)
@click.option("--password-stdin", is_flag=True, help="Read a link password from standard input.")
@click.option("--expires", help="When the link stops working: 5d, 12h, or 2026-12-31T17:00 (UTC).")
@click.option("--max-downloads", type=click.IntRange(min=1), help="Downloads before it stops.")
@click.option("--upload-window", help="How long a drop/write link takes uploads, e.g. 1h, 2d.")
@click.option("--label", default="", help="A name for the link (shown in lists).")
@click.option("--note", default="", help="A message shown to the people who open the link.")
@click.option("--as", "as_user", help="Make the link as this account (its role must allow it).")
@click.option(
    "--notify",
    metavar="uploads,downloads",
    help="Mail the creator (--as) about each drop and/or download through the link.",
)
@click.pass_obj
def share_create(
    ctx: Context,
    target: str,
    permission: str,
    password_stdin: bool,
    expires: str | None,
    max_downloads: int | None,
    upload_window: str | None,
    label: str,
    note: str,
    as_user: str | None,
    notify: str | None,
) -> None:
    """Make a link to a folder or file of a mailbox; print its URL (the token is in it)."""
    from davbox.app import Runtime
    from davbox.cli.notify import parse_link_notices
    from davbox.notify import subscriptions

    notices = parse_link_notices(notify) if notify else (False, False)
    if any(notices) and as_user is None:
        fail("--notify needs --as USER: the link's creator is the one notified")
    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    if any(notices) and as_user is not None:
        subscriptions.require_address(runtime.db, as_user)  # AdminError: one line, exit 1
    creator = None
    if as_user is not None:
        creator = runtime.access.principal_for(as_user)
        if creator is None:
            fail(f"no user named {as_user!r}")
    password = read_password_stdin() if password_stdin else None
    try:
        link, token = runtime.shares.create(
            creator,
            target,
            permission,
            password=password,
            expires_at=links.parse_when(expires) if expires else None,
            max_downloads=max_downloads,
            upload_window=links.parse_duration(upload_window) if upload_window else None,
            label=label,
            note=note,
        )
    except LinkError as exc:
        fail(str(exc))
    if any(notices):
        subscriptions.set_link_notify(runtime.db, link.id, uploads=notices[0], downloads=notices[1])
    url = f"{base_url(ctx.settings)}/s/{token}"
    click.echo(f"created {permission} link {link.id} to {link.mailbox}{link.path}")
    click.echo(f"link: {url}")
    click.echo(f"webdav: {url}/dav/")
    if link.expires_at:
        click.echo(f"expires: {_when(link.expires_at)}")


@share.command("list")
@click.option("--mailbox", help="Only links into this mailbox.")
@click.option("--user", "user_name", help="Only links made by this account.")
@click.pass_obj
def share_list(ctx: Context, mailbox: str | None, user_name: str | None) -> None:
    """List links: id, target, permission, state, expiry, limits, label, URL."""
    db = ctx.database()
    base = base_url(ctx.settings)
    for link in links.list_links(db, mailbox=mailbox, created_by=user_name):
        click.echo(_describe(link, f"{base}/s/{links.token_of(db, link.id)}"))


@share.command("revoke")
@click.argument("link_id", type=int)
@click.pass_obj
def share_revoke(ctx: Context, link_id: int) -> None:
    """Stop a link at once (it answers 404 from now on)."""
    from davbox.app import Runtime

    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    try:
        link = runtime.shares.revoke(None, link_id)
    except LinkError as exc:
        fail(str(exc))
    click.echo(f"revoked link {link.id} to {link.mailbox}{link.path}")
