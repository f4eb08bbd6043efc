"""Delivery reports: what happened through a share link, to a file, and to a user's links.

Contract:
- Reports are read from the audit trail only, through ``AuditStore.query``
  and ``davbox.audit.history`` (the same records ``davbox audit query`` and
  ``history`` print), plus the link's own row for its settings and state.
  Nothing here writes; who may see a report is decided elsewhere
  (``davbox.report_access``).
- A record becomes a ``ReportEvent`` with a ``category``:
  "placed" (an upload that stored a file), "fetched" (a download: ``size``
  is the bytes actually sent, ``whole`` False for a range or a transfer
  the client abandoned), "viewed" (a link page shown, or a folder listed
  over WebDAV), "changed" (delete, move, copy, new folder), "refused"
  (a policy or role said no) or "failed" (an upload or download that ended
  with an error status), and for a link "link" (created, changed, revoked).
  Records that repeat another's news are left out: a link's ``link-used``
  record accompanies every WebDAV request through the link, whose own
  record (upload, download, ...) is shown instead; only its folder
  listings (PROPFIND) have no other record. Locks and property changes
  are not deliveries and are left out.
- ``link_report`` has every record made by the link (actor ``link-<id>``)
  and every record about it (``link_id``: created, changed, revoked), oldest
  first by time (not by record number: a finished download is sealed by a
  writer thread, after records made later). ``file_report`` is the file's
  history (moves followed back), in the same order.
  ``links_overview`` lists the links one account made with their state and
  counts of placements and fetches and the time of their last use.
- Times are UTC. ``generated_at`` is when the report was made: a report
  shows the state at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from davbox import links
from davbox.audit import AuditStore, history
from davbox.db import Database
from davbox.links import Link

LINK_KINDS = ("link-created", "link-changed", "link-revoked")
_FETCHES = frozenset({"download", "link-downloaded"})
_PLACEMENTS = frozenset({"upload", "link-uploaded"})
_CHANGES = frozenset({"delete", "move", "copy", "mkcol"})
_LEFT_OUT = frozenset({"lock", "unlock", "proppatch", "report-viewed"})


@dataclass(frozen=True)
class ReportEvent:
    """One line of a report: when, what, who, from where, and how much."""

    seq: int
    time: datetime
    category: str
    kind: str
    actor: str
    actor_kind: str
    client: str
    user_agent: str
    mailbox: str
    path: str
    status: int | None
    size: int | None = None
    whole: bool | None = None
    detail: str = ""
    email: str = ""
    abandoned: bool = False  # a download the client left before the end
    archive: bool = False  # a folder sent as one zip

    @property
    def who(self) -> str:
        """The actor, with the external person's address when the record has one."""
        return f"{self.actor} ({self.email})" if self.email else self.actor


class _Totals:
    """Placements, fetches and bytes sent of a report's ``events``."""

    events: list[ReportEvent]

    @property
    def placements(self) -> list[ReportEvent]:
        return [e for e in self.events if e.category == "placed"]

    @property
    def fetches(self) -> list[ReportEvent]:
        return [e for e in self.events if e.category == "fetched"]

    @property
    def bytes_sent(self) -> int:
        """Bytes sent by all fetches (as recorded when each transfer ended)."""
        return sum(e.size or 0 for e in self.fetches)


@dataclass(frozen=True)
class LinkReport(_Totals):
    link: Link
    state: str
    events: list[ReportEvent]
    generated_at: datetime


@dataclass(frozen=True)
class FileReport(_Totals):
    mailbox: str
    path: str
    events: list[ReportEvent]
    generated_at: datetime


@dataclass(frozen=True)
class LinkSummary:
    """One link in an overview: its state and what went through it."""

    link: Link
    state: str
    uploads: int
    downloads: int
    bytes_sent: int
    last_used: datetime | None


@dataclass(frozen=True)
class LinksOverview:
    user: str
    links: list[LinkSummary] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def event_of(record: dict[str, Any]) -> ReportEvent | None:
    """The report line of an audit record (as ``AuditStore.query`` yields it), or None."""
    kind = record.get("kind", "")
    category = _category(record)
    if category is None:
        return None
    status = record.get("status")
    size: int | None = record.get("size")
    whole: bool | None = None
    details: list[str] = []
    if kind == "download":
        whole = not record.get("range") and bool(record.get("complete", True))
        if record.get("range"):
            details.append(str(record["range"]))
    elif kind == "link-downloaded":
        whole = not record.get("archive")
    elif kind in ("move", "copy"):
        details.append(f"-> {record.get('to_mailbox', '')}{record.get('to_path', '')}")
    elif kind == "access-refused":
        details.append(f"{record.get('operation', '')}: {record.get('reason', '')}")
    elif kind == "link-changed":
        details.append(", ".join(record.get("changed") or ()))
    elif kind == "link-used":
        details.append(str(record.get("method", "")))
    if kind in _PLACEMENTS and record.get("sha256"):
        details.append(f"sha256 {record['sha256']}")
    return ReportEvent(
        seq=int(record.get("seq", 0)),
        time=_parse_time(record.get("time", "")),
        category=category,
        kind=kind,
        actor=record.get("actor", "") or "",
        actor_kind=record.get("actor_kind", "") or "",
        client=record.get("client", "") or "",
        user_agent=record.get("user_agent", "") or "",
        mailbox=record.get("mailbox", "") or "",
        path=record.get("path", "") or "",
        status=status,
        size=size if isinstance(size, int) else None,
        whole=whole,
        detail="; ".join(d for d in details if d),
        email=record.get("email", "") or "",
        abandoned=kind == "download" and not record.get("complete", True),
        archive=bool(record.get("archive")),
    )


def _category(record: dict[str, Any]) -> str | None:
    kind = record.get("kind", "")
    status = record.get("status")
    failed = isinstance(status, int) and status >= 400
    if kind in _LEFT_OUT:
        return None
    if kind == "link-used":
        return "viewed" if record.get("method") == "PROPFIND" else None
    if kind in _PLACEMENTS:
        return "failed" if failed else "placed"
    if kind in _FETCHES:
        return "failed" if failed else "fetched"
    if kind == "link-viewed":
        return "viewed"
    if kind in _CHANGES:
        return "failed" if failed else "changed"
    if kind == "access-refused":
        return "refused"
    if kind in LINK_KINDS:
        return "link"
    return None


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _events(records: list[dict[str, Any]]) -> list[ReportEvent]:
    """Report lines by time (finished downloads are sealed later, so later numbered)."""
    found = [e for e in map(event_of, records) if e is not None]
    return sorted(found, key=lambda e: (e.time, e.seq))


def link_records(store: AuditStore, link: Link) -> list[dict[str, Any]]:
    """Every audit record made through ``link`` or about it, oldest first (unfiltered)."""
    made = {r["seq"]: r for r in store.query(actor=f"link-{link.id}")}
    for record in store.query(mailbox=link.mailbox, kinds=LINK_KINDS):
        if record.get("link_id") == link.id:
            made[record["seq"]] = record
    return [made[seq] for seq in sorted(made)]


def link_report(
    store: AuditStore, db: Database, link_id: int, now: datetime | None = None
) -> LinkReport:
    """The report of link ``link_id``; ``links.LinkError`` when there is no such link."""
    now = now or datetime.now(UTC)
    link = links.get(db, link_id)
    return LinkReport(link, link.state(now), _events(link_records(store, link)), now)


def file_report(
    store: AuditStore, mailbox: str, path: str, now: datetime | None = None
) -> FileReport:
    """The report of one file: who placed it, who fetched it, when, from where."""
    now = now or datetime.now(UTC)
    return FileReport(mailbox, path, _events(history(store, mailbox, path)), now)


def summarize(store: AuditStore, link: Link, now: datetime) -> LinkSummary:
    """One link's state and counts (placements, fetches, bytes sent, last use)."""
    events = _events(list(store.query(actor=f"link-{link.id}")))
    fetches = [e for e in events if e.category == "fetched"]
    return LinkSummary(
        link=link,
        state=link.state(now),
        uploads=sum(1 for e in events if e.category == "placed"),
        downloads=len(fetches),
        bytes_sent=sum(e.size or 0 for e in fetches),
        last_used=max((e.time for e in events), default=None),
    )


def links_overview(
    store: AuditStore, db: Database, user: str, now: datetime | None = None
) -> LinksOverview:
    """Every link ``user`` made, newest first, with its state and counts."""
    now = now or datetime.now(UTC)
    made = sorted(links.list_links(db, created_by=user), key=lambda k: k.id, reverse=True)
    return LinksOverview(user, [summarize(store, link, now) for link in made], now)
