"""``davbox expiry run``: delete (or list) the files whose retention has run out.

The server runs the same job every ``expiry.interval`` seconds; this command
runs it once, now or at a rehearsed ``--now``, and prints one line per file:
``<expires at>  <mailbox><path>  <rule>  <placed at>  <size>``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from davbox.cli import Context, fail, main


@main.group()
def expiry() -> None:
    """Retention: files deleted a set time after they were placed."""


@expiry.command("run")
@click.option("--dry-run", is_flag=True, help="Only list what is due; delete nothing.")
@click.option("--now", "now_text", help="Pretend it is this UTC time (ISO, e.g. 2026-12-01T09:00).")
@click.pass_obj
def expiry_run(ctx: Context, dry_run: bool, now_text: str | None) -> None:
    """Delete the files that are due (each deletion an audit record naming its rule)."""
    from davbox.app import Runtime

    now = _moment(now_text)
    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    job = runtime.expiry_job()
    done = job.run(now, dry_run=dry_run)
    for item in done:
        click.echo(
            f"{item.expires_at:%Y-%m-%dT%H:%M:%SZ}\t{item.mailbox}{item.path}\t{item.rule}"
            f"\tplaced {item.uploaded_at:%Y-%m-%dT%H:%M:%SZ}\t{item.size}"
        )
    verb = "due" if dry_run else "deleted"
    click.echo(f"{len(done)} file(s) {verb}")


@expiry.command("housekeeping")
@click.option("--now", "now_text", help="Pretend it is this UTC time (ISO, e.g. 2026-12-01T09:00).")
@click.pass_obj
def expiry_housekeeping(ctx: Context, now_text: str | None) -> None:
    """Remove what no one needs any more: stale temps, sessions, codes, old rows."""
    from davbox.app import Runtime

    now = _moment(now_text)
    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    swept = runtime.housekeeping().run(now.timestamp())
    for name, count in swept.counts.items():
        click.echo(f"{name}\t{count}")


@expiry.command("set")
@click.argument("target", metavar="MAILBOX/PATH")
@click.option("--until", help="When the file goes (UTC ISO time, e.g. 2026-12-31T17:00).")
@click.option("--in", "within", help="Or how long from now, e.g. 2d.")
@click.option("--clear", is_flag=True, help="Remove the file's own end (rules still apply).")
@click.pass_obj
def expiry_set(
    ctx: Context, target: str, until: str | None, within: str | None, clear: bool
) -> None:
    """Set when one file goes (as its uploader can with the available-until property)."""
    from sqlalchemy import select

    from davbox import durations, file_index
    from davbox.app import Runtime
    from davbox.db.models import Mailbox
    from davbox.sharing import split_target

    if [until is not None, within is not None, clear].count(True) != 1:
        fail("give one of --until, --in or --clear")
    mailbox, path = split_target(target)
    when = None
    try:
        if until is not None:
            when = file_index.parse_moment(until)
        elif within is not None:
            when = datetime.now(UTC) + durations.parse_duration(within)
    except ValueError as exc:
        fail(str(exc))
    runtime = Runtime.create(ctx.settings, ctx.data_dir, ctx.config_path)
    with runtime.db.session() as session:
        key = session.execute(select(Mailbox.storage_key).where(Mailbox.name == mailbox)).scalar()
    if key is None:
        fail(f"no mailbox named {mailbox!r}")
    if not (runtime.storage.mailbox_dir(key) / path.lstrip("/")).is_file():
        fail(f"no file {path} in mailbox {mailbox!r}")
    file_index.set_available_until(runtime.db, mailbox, path, when)
    end = f"goes at {when:%Y-%m-%dT%H:%M:%SZ}" if when else "has no end of its own"
    click.echo(f"{mailbox}{path} {end}")


def _moment(text: str | None) -> datetime:
    """``--now``: the given UTC time, or the current one."""
    if not text:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--now: cannot read {text!r} as a time; use e.g. 2026-12-01T09:00")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
