"""``davbox audit verify|query|history``: read the audit trail (``davbox.audit``).

- ``verify`` walks the whole chain: exit 0 with "N records, chain intact" and
  the last hash (keep it elsewhere to notice a rewound end later), or exit 1
  naming the first bad record's number and what is wrong with it.
- ``query`` prints the records matching every filter given, oldest first, as
  a table (default), CSV or JSON (one array). Times are UTC; ``--since`` and
  ``--until`` take ISO 8601 (a date alone is midnight UTC; ``--until`` is
  exclusive). ``--path`` ending in "/" matches everything below it.
- ``history MAILBOX/PATH``: one file's story (placed, fetched, moved, copied,
  deleted; who, when, from where), following moves back to earlier names.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from davbox.cli import Context, fail, main

TABLE_COLUMNS = ("seq", "time", "kind", "status", "actor", "client", "mailbox", "path", "details")
_COMMON = {
    "seq",
    "time",
    "kind",
    "status",
    "actor",
    "actor_kind",
    "credential_id",
    "client",
    "user_agent",
    "mailbox",
    "path",
    "request_id",
}


def _store(ctx: Context) -> Any:
    from davbox.audit import AuditStore

    return AuditStore(ctx.database())


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: expected an ISO 8601 time such as 2026-11-27 or 2026-11-27T14:00Z")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _details(record: dict[str, Any]) -> str:
    parts = []
    for key in sorted(record):
        value = record[key]
        if key not in _COMMON and value not in ("", None, False, []):
            parts.append(f"{key}={value}")
    if record.get("actor_kind") not in ("", None, "user"):
        credential = record.get("credential_id")
        parts.insert(0, f"as={record['actor_kind']}" + (f"#{credential}" if credential else ""))
    return " ".join(parts)


def _row(record: dict[str, Any]) -> list[str]:
    values = {**record, "details": _details(record)}
    return ["" if values.get(c) is None else str(values.get(c)) for c in TABLE_COLUMNS]


def _print(records: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(records, ensure_ascii=False, indent=1))
    elif output == "csv":
        keys = list(dict.fromkeys(["seq", "time", "kind"] + [k for r in records for k in r]))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({k: _cell(v) for k, v in record.items()})
        click.echo(buffer.getvalue(), nl=False)
    else:
        rows = [list(TABLE_COLUMNS)] + [_row(r) for r in records]
        widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_COLUMNS) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            click.echo("  ".join([*cells, row[-1]]).rstrip())


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


@main.group()
def audit() -> None:
    """Check and search the audit trail."""


@audit.command()
@click.pass_obj
def verify(ctx: Context) -> None:
    """Check every record's seal and place in the chain."""
    verdict = _store(ctx).verify()
    if verdict.problem is not None:
        click.echo(
            f"davbox: audit chain broken at {verdict.problem} (checked {verdict.records}"
            " records before it)",
            err=True,
        )
        sys.exit(1)
    trimmed = f"; records before {verdict.first} were trimmed" if verdict.first > 1 else ""
    click.echo(f"{verdict.records} records, chain intact (last hash {verdict.last_hash}){trimmed}")


@audit.command()
@click.option("--mailbox", help="Only this mailbox.")
@click.option("--path", help="Only this path in the mailbox (ending in /: everything below).")
@click.option("--actor", help="Only this actor (account name, link-<id>, admin).")
@click.option("--event", "kinds", multiple=True, help="Only this kind (repeatable): upload, ...")
@click.option("--since", help="From this UTC time (ISO 8601).")
@click.option("--until", help="Before this UTC time (ISO 8601).")
@click.option("--request", "request_id", help="Only this request id.")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_obj
def query(
    ctx: Context,
    mailbox: str | None,
    path: str | None,
    actor: str | None,
    kinds: tuple[str, ...],
    since: str | None,
    until: str | None,
    request_id: str | None,
    output: str,
) -> None:
    """Print the records that match every filter given, oldest first."""
    records = list(
        _store(ctx).query(
            mailbox=mailbox,
            path=path,
            actor=actor,
            kinds=kinds,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            request_id=request_id,
        )
    )
    _print(records, output)


@audit.command()
@click.argument("target")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table")
@click.pass_obj
def history(ctx: Context, target: str, output: str) -> None:
    """Who placed MAILBOX/PATH, who fetched it, when and from where."""
    from davbox.audit import history as file_history
    from davbox.links import LinkError
    from davbox.sharing import split_target

    try:
        mailbox, path = split_target(target)
    except LinkError as exc:
        fail(str(exc))
    _print(file_history(_store(ctx), mailbox, path), output)
