"""``davbox policy check`` and ``davbox policy explain``: try policy changes before they apply."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
from pydantic import ByteSize, TypeAdapter, ValidationError

from davbox.cli import Context, config_failed, fail, main
from davbox.config import ConfigError, load_settings

OPERATIONS = {
    "read": "read",
    "list": "list",
    "create": "create",
    "write": "create",
    "overwrite": "overwrite",
    "delete": "delete",
    "move": "move",
    "mkcol": "mkcol",
    "lock": "lock",
    "proppatch": "proppatch",
}


@main.group()
def policy() -> None:
    """Check and explain policies."""


@policy.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def policy_check(ctx: Context, file: Path | None) -> None:
    """Validate FILE (default: --config); exit 0 when valid, 2 otherwise."""
    path = file or ctx.config_path
    if path is None:
        fail("name a file, or give --config")
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        config_failed(exc)
    count = len(settings.policies)
    click.echo(f"{path}: valid, {count} polic{'y' if count == 1 else 'ies'}")


@policy.command("explain")
@click.option("--user", required=True, help="Account name.")
@click.option("--path", "target", required=True, help="/MAILBOX/path/inside")
@click.option(
    "--op",
    "operation",
    default="read",
    show_default=True,
    type=click.Choice(sorted(OPERATIONS)),
    help="What the user wants to do (write = create).",
)
@click.option("--size", help="File size, e.g. 300MB.")
@click.option(
    "--login",
    type=click.Choice(["app-password", "password"]),
    default="app-password",
    show_default=True,
    help="How the user logged in: with a second factor (app password) or a password alone.",
)
@click.pass_obj
def policy_explain(
    ctx: Context, user: str, target: str, operation: str, size: str | None, login: str
) -> None:
    """Show which rules match a request and the decision, with its reason."""
    from davbox.access import AccessService
    from davbox.policies.base import AccessRequest, Operation
    from davbox.policies.engine import PolicyEngine
    from davbox.policies.registry import build_policies
    from davbox.providers.identity.sql import SqlIdentityProvider

    try:
        size_bytes = int(TypeAdapter(ByteSize).validate_python(size)) if size else None
    except ValidationError:
        fail(f"--size: cannot read {size!r} as a size (e.g. 300MB, 2GiB)")
    mailbox, _, rest = target.strip("/").partition("/")
    if not mailbox:
        fail("--path must start with a mailbox: /MAILBOX/path")
    db = ctx.database()
    access = AccessService(db, [SqlIdentityProvider(db)], cache_ttl=0, refresh_interval=0)
    principal = access.principal_for(user)
    if principal is None:
        fail(f"no user named {user!r}")
    principal = replace(principal, second_factor=login == "app-password")
    box = access.mailboxes_for(principal).get(mailbox)
    roles = box.roles if box else frozenset()
    engine = PolicyEngine(
        build_policies(ctx.settings.policies, {}, str(ctx.config_path))[0],
        members_may_share=ctx.settings.links.members_may_share,
    )
    request = AccessRequest(
        principal,
        mailbox,
        "/" + rest,
        Operation(OPERATIONS[operation]),
        roles,
        size=size_bytes,
        new_files=1 if OPERATIONS[operation] == "create" else 0,
    )
    click.echo(f"request: {user} {operation} /{mailbox}/{rest}" + (f" ({size})" if size else ""))
    if box is None:
        click.echo(f"decision: refused (404): {user} has no role in mailbox '{mailbox}'")
        return
    click.echo(f"roles in '{mailbox}': {', '.join(sorted(roles))}")
    lines, decision = engine.explain(request)
    for line in lines:
        if not line.applies:
            verdict = "does not apply"
        elif line.decision is None or line.decision.allowed:
            verdict = "allows"
        else:
            verdict = f"refuses ({line.decision.status}): {line.decision.reason}"
        click.echo(f"  {line.label}: {verdict}")
    if decision.allowed:
        click.echo("decision: allowed")
    else:
        click.echo(f"decision: refused ({decision.status}): {decision.reason}")
