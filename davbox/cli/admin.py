"""Administration commands: ``user``, ``group`` and ``mailbox``.

All are scriptable: no prompts, one-line errors (exit 1), passwords only from
``--password-stdin`` (or generated and printed once when omitted).
"""

from __future__ import annotations

import click

from davbox import accounts
from davbox.accounts import ROLES
from davbox.cli import Context, main, read_password_stdin
from davbox.passwords import generate_password


@main.group()
def user() -> None:
    """Manage accounts."""


@user.command("add")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--email", help="Address for notifications.")
@click.option("--display-name", default="", help="Name shown to other users.")
@click.option("--admin", "is_admin", is_flag=True, help="May administer davbox.")
@click.pass_obj
def user_add(
    ctx: Context,
    name: str,
    password_stdin: bool,
    email: str | None,
    display_name: str,
    is_admin: bool,
) -> None:
    """Create an account (a password is generated and shown once without --password-stdin)."""
    password = read_password_stdin() if password_stdin else generate_password()
    accounts.add_user(
        ctx.database(), name, password, email=email, display_name=display_name, is_admin=is_admin
    )
    click.echo(f"created user {name!r}")
    if not password_stdin:
        click.echo(f"password (shown once): {password}")


@user.command("list")
@click.pass_obj
def user_list(ctx: Context) -> None:
    """List accounts."""
    for row in accounts.list_users(ctx.database()):
        flags = [f for f, on in (("admin", row.is_admin), ("disabled", row.disabled)) if on]
        groups = ",".join(g.name for g in row.groups) or "-"
        click.echo(f"{row.name}\t{'+'.join(flags) or 'active'}\tgroups={groups}")


@user.command("disable")
@click.argument("name")
@click.pass_obj
def user_disable(ctx: Context, name: str) -> None:
    """Block an account from logging in (its files stay)."""
    accounts.set_disabled(ctx.database(), name, True)
    click.echo(f"disabled user {name!r}")


@user.command("enable")
@click.argument("name")
@click.pass_obj
def user_enable(ctx: Context, name: str) -> None:
    """Allow a disabled account to log in again."""
    accounts.set_disabled(ctx.database(), name, False)
    click.echo(f"enabled user {name!r}")


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.pass_obj
def user_passwd(ctx: Context, name: str, password_stdin: bool) -> None:
    """Set a new password (generated and shown once without --password-stdin)."""
    password = read_password_stdin() if password_stdin else generate_password()
    accounts.set_password(ctx.database(), name, password)
    click.echo(f"changed the password of {name!r}")
    if not password_stdin:
        click.echo(f"password (shown once): {password}")


@user.command("remove")
@click.argument("name")
@click.pass_obj
def user_remove(ctx: Context, name: str) -> None:
    """Delete an account and its roles (mailbox contents stay)."""
    accounts.remove_user(ctx.database(), name)
    click.echo(f"removed user {name!r}")


@main.group()
def group() -> None:
    """Manage groups of accounts."""


@group.command("add")
@click.argument("name")
@click.pass_obj
def group_add(ctx: Context, name: str) -> None:
    """Create a group."""
    accounts.add_group(ctx.database(), name)
    click.echo(f"created group {name!r}")


@group.command("remove")
@click.argument("name")
@click.pass_obj
def group_remove(ctx: Context, name: str) -> None:
    """Delete a group (its members lose the roles granted to it)."""
    accounts.remove_group(ctx.database(), name)
    click.echo(f"removed group {name!r}")


@group.command("members")
@click.argument("name")
@click.option("--add", "to_add", multiple=True, metavar="USER", help="Add a member (repeatable).")
@click.option(
    "--remove", "to_remove", multiple=True, metavar="USER", help="Remove a member (repeatable)."
)
@click.pass_obj
def group_members(
    ctx: Context, name: str, to_add: tuple[str, ...], to_remove: tuple[str, ...]
) -> None:
    """Show a group's members, adding or removing some first."""
    members = accounts.change_group_members(ctx.database(), name, list(to_add), list(to_remove))
    for member in members:
        click.echo(member)


@main.group()
def mailbox() -> None:
    """Manage mailboxes and who may use them."""


@mailbox.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the mailbox is for.")
@click.pass_obj
def mailbox_create(ctx: Context, name: str, description: str) -> None:
    """Create an empty mailbox (grant roles to make it visible)."""
    accounts.create_mailbox(ctx.database(), name, description)
    click.echo(f"created mailbox {name!r}")


@mailbox.command("list")
@click.pass_obj
def mailbox_list(ctx: Context) -> None:
    """List mailboxes and their members."""
    for box in accounts.list_mailboxes(ctx.database()):
        members = ", ".join(f"{who}={role}" for who, role in box.grants) or "-"
        click.echo(f"{box.name}\t{members}")


@mailbox.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, required=True, help="Confirm: its files are deleted.")
@click.pass_obj
def mailbox_remove(ctx: Context, name: str, yes: bool) -> None:
    """Delete a mailbox and all its files."""
    db = ctx.database()
    storage = ctx.storage(db)  # before the mailbox goes: a missing key stops this here
    key = accounts.remove_mailbox(db, name)
    storage.remove_mailbox(key)
    click.echo(f"removed mailbox {name!r} and its files")


@mailbox.command("grant")
@click.argument("mailbox_name", metavar="MAILBOX")
@click.argument("principal", metavar="USER|@GROUP")
@click.argument("role", metavar="ROLE")
@click.pass_obj
def mailbox_grant(ctx: Context, mailbox_name: str, principal: str, role: str) -> None:
    accounts.grant(ctx.database(), mailbox_name, principal, role)
    click.echo(f"{principal} is now {role} of mailbox {mailbox_name!r}")


mailbox_grant.help = f"Give a user or @group a ROLE ({', '.join(ROLES)}) in a mailbox."


@mailbox.command("revoke")
@click.argument("mailbox_name", metavar="MAILBOX")
@click.argument("principal", metavar="USER|@GROUP")
@click.pass_obj
def mailbox_revoke(ctx: Context, mailbox_name: str, principal: str) -> None:
    """Take away a user's or @group's role in a mailbox."""
    accounts.revoke(ctx.database(), mailbox_name, principal)
    click.echo(f"{principal} no longer has a role in mailbox {mailbox_name!r}")


@main.group("app-password")
def app_password() -> None:
    """Passwords for WebDAV clients (one per client, revocable)."""


@app_password.command("create")
@click.argument("user_name", metavar="USER")
@click.option("--label", required=True, help="Which client it is for, e.g. laptop-explorer.")
@click.option(
    "--mailbox", "mailboxes", multiple=True, metavar="MAILBOX", help="Limit to this mailbox."
)
@click.option("--read-only", is_flag=True, help="May only read and list.")
@click.pass_obj
def app_password_create(
    ctx: Context, user_name: str, label: str, mailboxes: tuple[str, ...], read_only: bool
) -> None:
    """Make an app password; it is printed once and stored only as an HMAC."""
    from davbox import app_passwords

    password = app_passwords.create(
        ctx.database(), user_name, label, mailboxes=mailboxes, read_only=read_only
    )
    click.echo(f"app password {label!r} for {user_name!r} (shown once): {password}")


@app_password.command("list")
@click.argument("user_name", metavar="[USER]", required=False)
@click.pass_obj
def app_password_list(ctx: Context, user_name: str | None) -> None:
    """List app passwords with their limits and last use."""
    from davbox import app_passwords

    for item in app_passwords.list_for(ctx.database(), user_name):
        limits = ",".join(item.mailboxes) or "all mailboxes"
        if item.read_only:
            limits += ", read-only"
        used = (
            f"last used {item.last_used_at:%Y-%m-%d %H:%M} UTC from {item.last_used_from or '?'}"
            if item.last_used_at
            else "never used"
        )
        click.echo(f"{item.user}\t{item.label}\t{limits}\t{used}")


@app_password.command("revoke")
@click.argument("user_name", metavar="USER")
@click.argument("label")
@click.pass_obj
def app_password_revoke(ctx: Context, user_name: str, label: str) -> None:
    """Revoke an app password (clients using it are refused within a second)."""
    from davbox import app_passwords

    app_passwords.revoke(ctx.database(), user_name, label)
    click.echo(f"revoked app password {label!r} of {user_name!r}")


@main.group("2fa")
def two_factor() -> None:
    """Two-factor login (TOTP) for accounts."""


@two_factor.command("enroll")
@click.argument("user_name", metavar="USER")
@click.option("--no-qr", is_flag=True, help="Do not draw the QR code in the terminal.")
@click.pass_obj
def two_factor_enroll(ctx: Context, user_name: str, no_qr: bool) -> None:
    """Give USER a new TOTP secret: prints the otpauth:// URI, a QR code and recovery codes."""
    import io

    import segno

    from davbox import twofactor

    enrollment = twofactor.enroll(ctx.database(), user_name)
    click.echo(f"otpauth URI for {user_name!r} (hand it over privately):")
    click.echo(enrollment.uri)
    if not no_qr:
        out = io.StringIO()
        segno.make(enrollment.uri, error="m").terminal(out=out, compact=True)
        click.echo(out.getvalue())
    click.echo("recovery codes (each works once; shown only now):")
    for code in enrollment.recovery_codes:
        click.echo(f"  {code}")


@two_factor.command("reset")
@click.argument("user_name", metavar="USER")
@click.pass_obj
def two_factor_reset(ctx: Context, user_name: str) -> None:
    """Remove USER's TOTP secret and recovery codes (they enroll again at the next login)."""
    from davbox import twofactor

    twofactor.reset(ctx.database(), user_name)
    click.echo(f"removed two-factor login of {user_name!r}")
