"""Delivery report pages for logged-in accounts: their links, a link's report, a file's report.

Routes (``RULES``, served by ``WebApp`` for full sessions only; others are
sent to log in):

- ``/account/links``: the links this account made, newest first, with
  state, counts of placements and fetches, bytes sent and last use; a form
  that opens a file's report.
- ``/account/links/<id>``: the link's report (``davbox.reports.link_report``);
  ``?format=pdf`` downloads it as PDF.
- ``/account/files/<mailbox>/<path>``: a file's report; ``?format=pdf`` as PDF.
  ``/account/files?target=MAILBOX/PATH`` redirects there.

Guarantees:
- Who may see what is ``davbox.report_access``; anything else, and links or
  files that do not exist, get the same 404 page, so ids and names cannot be
  probed.
- Every report shown or downloaded is a ``ReportViewed`` event, written
  before the report is sent; if the audit trail cannot take it, the answer
  is 503 and no report is shown.
- PDFs name the installation by ``server.public_url``, or else the address
  the request came to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from werkzeug.exceptions import NotFound
from werkzeug.routing import Rule
from werkzeug.utils import redirect, secure_filename
from werkzeug.wrappers import Response

from davbox import links
from davbox.admin_ui import report_pdf, report_text
from davbox.admin_ui.i18n import gettext
from davbox.audit import AuditStore, AuditUnavailable
from davbox.events import EventBus, ReportViewed, request_context
from davbox.links import LinkError
from davbox.report_access import ReportAccess
from davbox.reports import ReportEvent, file_report, link_report, links_overview
from davbox.sharing import split_target

if TYPE_CHECKING:
    from davbox.admin_ui.web import Page, WebApp

_READ = ["GET", "HEAD"]
RULES = [
    Rule("/account/links", endpoint="report_links", methods=_READ),
    Rule("/account/links/<int:link_id>", endpoint="report_link", methods=_READ),
    Rule("/account/files", endpoint="report_file_form", methods=_READ),
    Rule("/account/files/<path:target>", endpoint="report_file", methods=_READ),
]


class ReportPages:
    def __init__(
        self,
        store: AuditStore,
        access: ReportAccess,
        events: EventBus,
        public_url: str | None = None,
    ) -> None:
        self.store = store
        self.access = access
        self.events = events
        self.public_url = public_url.rstrip("/") if public_url else None
        self._web: WebApp | None = None

    def attach(self, web: WebApp) -> None:
        self._web = web

    @property
    def web(self) -> WebApp:
        assert self._web is not None, "ReportPages.attach(web) first"
        return self._web

    # -- pages ------------------------------------------------------------------------

    def on_report_links(self, page: Page) -> Response:
        if (other := self.web._full(page)) is not None:
            return other
        user = self._user(page)
        overview = links_overview(self.store, self.access.db, user)
        if (refused := self._record(page, "links", "html")) is not None:
            return refused
        return self.web.render(
            page,
            "report_links.html",
            overview=overview,
            states=report_text.STATES,
            permissions=report_text.PERMISSIONS,
            when=report_text.when,
            target=report_text.target,
        )

    def on_report_link(self, page: Page, link_id: int) -> Response:
        if (other := self.web._full(page)) is not None:
            return other
        user = self._user(page)
        try:
            link = links.get(self.access.db, link_id)
        except LinkError:
            raise NotFound() from None
        if not self.access.may_see_link(user, link):
            raise NotFound()
        report = link_report(self.store, self.access.db, link_id)
        pdf = page.request.args.get("format") == "pdf"
        if (refused := self._record(page, "link", "pdf" if pdf else "html", link)) is not None:
            return refused
        if pdf:
            body = report_pdf.link_pdf(report, page.lang, self._public_url(page))
            return _pdf(body, f"davbox-link-{link.id}-report.pdf")
        return self.web.render(
            page,
            "report_link.html",
            report=report,
            facts=report_text.link_facts(report.link, report.state, page.lang),
            **self._table(page, report.events),
        )

    def on_report_file_form(self, page: Page) -> Response:
        if (other := self.web._full(page)) is not None:
            return other
        wanted = page.request.args.get("target", "").strip().strip("/")
        if not wanted:
            return redirect("/account/links", 303)
        return redirect("/account/files/" + quote(wanted), 303)

    def on_report_file(self, page: Page, target: str) -> Response:
        if (other := self.web._full(page)) is not None:
            return other
        user = self._user(page)
        try:
            mailbox, path = split_target(target)
        except LinkError:
            raise NotFound() from None
        report = file_report(self.store, mailbox, path)
        if not report.events or not self.access.may_see_file(user, report):
            raise NotFound()
        pdf = page.request.args.get("format") == "pdf"
        if (
            refused := self._record(page, "file", "pdf" if pdf else "html", None, report)
        ) is not None:
            return refused
        if pdf:
            body = report_pdf.file_pdf(report, page.lang, self._public_url(page))
            name = secure_filename(path.rsplit("/", 1)[-1]) or "file"
            return _pdf(body, f"davbox-{name}-report.pdf")
        return self.web.render(
            page, "report_file.html", report=report, **self._table(page, report.events)
        )

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def _user(page: Page) -> str:
        assert page.session is not None
        return page.session.username

    def _public_url(self, page: Page) -> str:
        return self.public_url or page.request.host_url.rstrip("/")

    def _table(self, page: Page, events: list[ReportEvent]) -> dict[str, Any]:
        return {
            "columns": [gettext(page.lang, c) for c in report_text.COLUMNS],
            "rows": [(e, report_text.event_cells(e, page.lang)) for e in events],
            "when": report_text.when,
        }

    def _record(
        self,
        page: Page,
        report: str,
        output: str,
        link: links.Link | None = None,
        file: Any = None,
    ) -> Response | None:
        """Write the ``ReportViewed`` event; a 503 page (no report) if it cannot be written."""
        where: dict[str, str] = {"mailbox": "", "path": ""}
        if link is not None:
            where = {"mailbox": link.mailbox, "path": link.path}
        elif file is not None:
            where = {"mailbox": file.mailbox, "path": file.path}
        context = request_context(page.request.environ)
        context.update(where, actor=self._user(page), actor_kind="user", credential_id=None)
        try:
            self.events.emit(
                ReportViewed(
                    **context,
                    status=200,
                    report=report,
                    format=output,
                    link_id=link.id if link is not None else None,
                )
            )
        except AuditUnavailable:
            return self.web.render(
                page,
                "message.html",
                503,
                title=page._("Reports cannot be shown right now"),
                text=page._("The audit trail cannot record this now. Try again later."),
                back=True,
            )
        return None


def _pdf(body: bytes, filename: str) -> Response:
    response = Response(body, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response
