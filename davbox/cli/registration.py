"""``davbox registration list|purge``: self-registrations waiting for their mailed link.

``list`` shows pending requests (id, address, name, client, asked, link valid
until), never tokens or password hashes. ``purge`` expires overdue requests
(their password hashes are dropped) and removes rows older than
``web.registration.throttle_window`` that no longer count for throttling;
the server also does this by itself, at most once a minute while people
register.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from davbox.cli import Context, main

if TYPE_CHECKING:
    from davbox.registration import Registrations


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _registrations(ctx: Context) -> Registrations:
    from davbox.mail import Outbox
    from davbox.paths import base_url
    from davbox.registration import Registrations

    db = ctx.database()
    return Registrations(db, Outbox(db), ctx.settings.web.registration, base_url(ctx.settings))


@main.group()
def registration() -> None:
    """Self-registration (web.registration): pending requests and clean-up."""


@registration.command("list")
@click.pass_obj
def registration_list(ctx: Context) -> None:
    """Pending requests, oldest first: id, address, name, client, asked, valid until (UTC)."""
    rows = _registrations(ctx).pending()
    for row in rows:
        click.echo(
            "\t".join(
                [
                    str(row.id),
                    row.email,
                    row.display_name,
                    row.client or "-",
                    _when(row.created_at),
                    _when(row.expires_at),
                ]
            )
        )
    click.echo(f"{len(rows)} pending", err=True)


@registration.command("purge")
@click.pass_obj
def registration_purge(ctx: Context) -> None:
    """Expire overdue requests and drop old ones that no longer count for throttling."""
    expired, dropped = _registrations(ctx).purge()
    click.echo(f"expired {expired}, removed {dropped}")
