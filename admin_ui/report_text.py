"""The words of delivery reports, in the page's language: shared by the HTML pages and the PDF.

Contract: every text is an English message id translated with the web
pages' catalogue (``davbox.admin_ui.i18n``), so the PDF and the pages say
the same in Dutch and English, and the catalogue test sees these ids.
Times are shown as ``YYYY-MM-DD HH:MM:SS UTC`` in both languages (a report
is evidence: no locale-dependent date forms); byte counts as exact numbers.
"""

from __future__ import annotations

from datetime import UTC, datetime

from davbox.admin_ui.i18n import gettext
from davbox.links import Link
from davbox.reports import ReportEvent


def _(message: str) -> str:
    """Marks a message id for extraction; translated where it is shown."""
    return message


CATEGORIES = {
    "placed": _("placed"),
    "fetched": _("fetched"),
    "viewed": _("viewed"),
    "changed": _("changed"),
    "refused": _("refused"),
    "failed": _("failed"),
    "link": _("link"),
}
KINDS = {
    "upload": _("upload over WebDAV"),
    "link-uploaded": _("upload on the link page"),
    "download": _("download over WebDAV"),
    "link-downloaded": _("download on the link page"),
    "link-viewed": _("link page shown"),
    "link-used": _("folder listed over WebDAV"),
    "delete": _("deleted"),
    "move": _("moved"),
    "copy": _("copied"),
    "mkcol": _("folder made"),
    "access-refused": _("refused"),
    "link-created": _("link created"),
    "link-changed": _("link changed"),
    "link-revoked": _("link revoked"),
}
STATES = {
    "active": _("active"),
    "revoked": _("revoked"),
    "expired": _("expired"),
    "exhausted": _("downloads used up"),
}
PERMISSIONS = {
    "read": _("read (download)"),
    "drop": _("drop (upload only)"),
    "write": _("write (read and change)"),
}
COLUMNS = (
    _("#"),
    _("Time"),
    _("Event"),
    _("Who"),
    _("Address"),
    _("Path"),
    _("Bytes"),
    _("Whole file"),
    _("Program"),
    _("Details"),
)


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def target(link: Link) -> str:
    return link.mailbox + (link.path if link.path != "/" else "/")


def yes_no(value: bool | None, lang: str) -> str:
    def _(message: str) -> str:
        return gettext(lang, message)

    if value is None:
        return "-"
    return _("yes") if value else _("no")


def event_cells(event: ReportEvent, lang: str) -> list[str]:
    """The table cells of one event, in ``COLUMNS`` order."""

    def _(message: str) -> str:
        return gettext(lang, message)

    kind = KINDS.get(event.kind)
    label = gettext(lang, CATEGORIES.get(event.category, event.category))
    if kind and event.category in ("link", "refused"):
        label = gettext(lang, kind)  # "link created", "refused": the category says no more
    elif kind:
        label = f"{label}: {gettext(lang, kind)}"
    details = [event.detail] if event.detail else []
    if event.abandoned:
        details.insert(0, _("the client stopped before the end"))
    if event.archive:
        details.insert(0, _("the folder as one zip file"))
    return [
        str(event.seq),
        when(event.time),
        label,
        event.who or "-",
        event.client or "-",
        f"{event.mailbox}{event.path}" if event.mailbox else event.path or "-",
        str(event.size) if event.size is not None else "-",
        yes_no(event.whole, lang),
        event.user_agent or "-",
        "; ".join(details),
    ]


def link_facts(link: Link, state: str, lang: str) -> list[tuple[str, str]]:
    """(label, value) lines describing a link, translated."""

    def _(message: str) -> str:
        return gettext(lang, message)

    t = _  # for texts translated above (not message ids here)
    facts = [
        (_("Link"), f"{link.id}" + (f" ({link.label})" if link.label else "")),
        (_("Shares"), target(link)),
        (_("Permission"), t(PERMISSIONS.get(link.permission, link.permission))),
        (_("Status"), t(STATES.get(state, state))),
        (_("Created by"), link.created_by or _("an administrator")),
        (_("Created"), when(link.created_at)),
        (_("Expires"), when(link.expires_at) if link.expires_at else _("never")),
    ]
    if link.revoked_at is not None:
        facts.append((_("Revoked"), when(link.revoked_at)))
    if link.upload_until is not None:
        facts.append((_("Uploads until"), when(link.upload_until)))
    if link.max_downloads is not None:
        facts.append((_("Downloads"), f"{link.downloads} / {link.max_downloads}"))
    facts.append((_("Password"), _("yes") if link.has_password else _("no")))
    return facts
