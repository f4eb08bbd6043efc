"""``davbox report link|file|links``: delivery reports at the command line (``davbox.reports``).

- ``link ID``: the link's settings and state, then every placement, fetch,
  view and refusal through it and its creation, changes and revocation.
- ``file MAILBOX/PATH``: who placed the file, who fetched it, when, from
  where (moves followed back, as ``audit history``).
- ``links USER``: every link the account made, with state and counts.

``--format table`` (default) or ``json``; ``--pdf FILE`` also writes the
report as PDF (``--lang en|nl``), naming the installation by
``server.public_url`` (else the listen address). The reports read the same
records as ``davbox audit query``. Each report made is itself recorded
(``report-viewed``, actor "admin"); when the audit trail cannot take that
record, no report is shown (exit 1).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from davbox.cli import Context, fail, main

EVENT_COLUMNS = ("seq", "time", "category", "kind", "who", "client", "path", "bytes", "whole")


def _json(value: Any) -> str:
    def default(item: Any) -> Any:
        if isinstance(item, datetime):
            return item.isoformat()
        return str(item)

    return json.dumps(value, ensure_ascii=False, indent=1, default=default)


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]).rstrip())


def _events(events: list[Any]) -> None:
    from davbox.admin_ui.report_text import when

    rows = [[*EVENT_COLUMNS, "details"]]
    for e in events:
        whole = "-" if e.whole is None else ("yes" if e.whole else "no")
        details = [d for d in (e.detail, f"agent={e.user_agent}" if e.user_agent else "") if d]
        rows.append(
            [
                str(e.seq),
                when(e.time),
                e.category,
                e.kind,
                e.who or "-",
                e.client or "-",
                f"{e.mailbox}{e.path}",
                "-" if e.size is None else str(e.size),
                whole,
                "; ".join(details),
            ]
        )
    _table(rows)


def _record(db: Any, report: str, output: str, **where: Any) -> None:
    """The ``report-viewed`` record; exit 1 without a report if it cannot be written."""
    from davbox.audit import AuditStore, AuditUnavailable
    from davbox.events import ReportViewed

    try:
        AuditStore(db).append(
            ReportViewed(actor="admin", actor_kind="admin", report=report, format=output, **where)
        )
    except AuditUnavailable as exc:
        fail(f"{exc}; no report is made while it cannot be recorded")


def _write_pdf(path: Path, body: bytes) -> None:
    try:
        path.write_bytes(body)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}")
    click.echo(f"wrote {path}", err=True)


@main.group()
def report() -> None:
    """Delivery reports: what went through a link, what happened to a file."""


_FORMAT = click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
_PDF = click.option(
    "--pdf", "pdf_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write a PDF."
)
_LANG = click.option(
    "--lang", type=click.Choice(["en", "nl"]), default="en", show_default=True, help="PDF language."
)


@report.command("link")
@click.argument("link_id", type=int)
@_FORMAT
@_PDF
@_LANG
@click.pass_obj
def report_link(ctx: Context, link_id: int, output: str, pdf_path: Path | None, lang: str) -> None:
    """Every placement and fetch through share link LINK_ID, and its settings and state."""
    from davbox.admin_ui import report_pdf, report_text
    from davbox.audit import AuditStore
    from davbox.links import LinkError
    from davbox.paths import base_url
    from davbox.reports import link_report

    db = ctx.database()
    try:
        made = link_report(AuditStore(db), db, link_id)
    except LinkError as exc:
        fail(str(exc))
    link = made.link
    _record(
        db,
        "link",
        "pdf" if pdf_path else output,
        mailbox=link.mailbox,
        path=link.path,
        link_id=link.id,
    )
    if pdf_path is not None:
        _write_pdf(pdf_path, report_pdf.link_pdf(made, lang, base_url(ctx.settings)))
    if output == "json":
        click.echo(_json(asdict(made)))
        return
    for label, value in report_text.link_facts(link, made.state, "en"):
        click.echo(f"{label}: {value}")
    click.echo(
        f"placed: {len(made.placements)}  fetched: {len(made.fetches)}"
        f"  bytes sent: {made.bytes_sent}"
    )
    _events(made.events)


@report.command("file")
@click.argument("target", metavar="MAILBOX/PATH")
@_FORMAT
@_PDF
@_LANG
@click.pass_obj
def report_file(ctx: Context, target: str, output: str, pdf_path: Path | None, lang: str) -> None:
    """Who placed MAILBOX/PATH, who fetched it, when and from where."""
    from davbox.admin_ui import report_pdf
    from davbox.audit import AuditStore
    from davbox.links import LinkError
    from davbox.paths import base_url
    from davbox.reports import file_report
    from davbox.sharing import split_target

    try:
        mailbox, path = split_target(target)
    except LinkError as exc:
        fail(str(exc))
    db = ctx.database()
    made = file_report(AuditStore(db), mailbox, path)
    if not made.events:
        fail(f"the audit trail has nothing about {mailbox}{path}")
    _record(db, "file", "pdf" if pdf_path else output, mailbox=mailbox, path=path)
    if pdf_path is not None:
        _write_pdf(pdf_path, report_pdf.file_pdf(made, lang, base_url(ctx.settings)))
    if output == "json":
        click.echo(_json(asdict(made)))
        return
    click.echo(f"file: {mailbox}{path}")
    click.echo(
        f"placed: {len(made.placements)}  fetched: {len(made.fetches)}"
        f"  bytes sent: {made.bytes_sent}"
    )
    _events(made.events)


@report.command("links")
@click.argument("user")
@_FORMAT
@click.pass_obj
def report_links(ctx: Context, user: str, output: str) -> None:
    """Every share link USER made: state, placements, fetches, bytes sent, last use."""
    from sqlalchemy import select

    from davbox.admin_ui.report_text import target, when
    from davbox.audit import AuditStore
    from davbox.db.models import User
    from davbox.reports import links_overview

    db = ctx.database()
    with db.session() as session:
        if session.execute(select(User.id).where(User.name == user)).first() is None:
            fail(f"no user named {user!r}")
    made = links_overview(AuditStore(db), db, user)
    _record(db, "links", output, mailbox="", path="")
    if output == "json":
        click.echo(_json(asdict(made)))
        return
    rows = [["id", "target", "permission", "state", "placed", "fetched", "bytes", "last used"]]
    for item in made.links:
        rows.append(
            [
                str(item.link.id),
                target(item.link),
                item.link.permission,
                item.state,
                str(item.uploads),
                str(item.downloads),
                str(item.bytes_sent),
                when(item.last_used),
            ]
        )
    _table(rows)
