"""The notification settings page of a logged-in account: ``/account/notifications``.

Routes (``RULES``, served by ``WebApp`` for full sessions only; others are
sent to log in): GET shows, POST (with the session's CSRF token) saves.

What the page offers: per mailbox the account has a role in, "new file
placed" (not to droppers) and "a file I placed was fetched", each off,
immediately, or in an hourly or daily digest; and the language of the
mails. The mail address is shown, not edited: an administrator sets it
(``davbox notify address``), because an address nobody verified would let
anyone have the server mail strangers.

Guarantees:
- Form fields are ``placed:<mailbox>`` / ``fetched:<mailbox>`` and
  ``language``. The whole form is checked against the database first
  (``davbox.notify.preferences.plan``): a mailbox without a role, "placed"
  for a dropper, a notice without an address, or an unknown value is a 400
  page and nothing is saved. Only the session's own account is touched.
- Every real change is a ``SubscriptionChanged`` event (mailbox, setting,
  before, after). The audit trail is asked first whether it can write; if
  not, 503 and nothing is saved. A record that fails after the save is a
  503 saying so, never a success.
- Saved settings reach the notification sink within its refresh (~1 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from davbox.audit import AuditStore, AuditUnavailable
from davbox.events import EventBus, SubscriptionChanged, request_context
from davbox.notify import preferences
from davbox.notify.preferences import ChoiceRefused, Preferences
from davbox.notify.subscriptions import EVENTS

if TYPE_CHECKING:
    from davbox.admin_ui.web import Page, WebApp

PATH = "/account/notifications"
RULES = [Rule(PATH, endpoint="notify_settings", methods=["GET", "HEAD", "POST"])]


def _(message: str) -> str:
    """Mark a message id for extraction; the page translates it when shown."""
    return message


# The page's words for refusals of ``preferences.plan`` (by reason).
REFUSALS = {
    "no-address": _(
        "You have no mail address for notifications yet: an administrator must set one."
    ),
    "dropper": _(
        "You may only drop files in mailbox {mailbox}, so you cannot be told about new files there."
    ),
    "no-mailbox": _("You have no mailbox {mailbox}."),
    "unknown-value": _("That choice is not one this page offers."),
}


class NotifyPages:
    def __init__(
        self,
        events: EventBus,
        *,
        audit: AuditStore | None = None,
        mail_active: bool = True,
        mail_language: str = "nl",
    ) -> None:
        self.events = events
        self.audit = audit
        self.mail_active = mail_active
        self.mail_language = mail_language
        self._web: WebApp | None = None

    def attach(self, web: WebApp) -> None:
        self._web = web

    @property
    def web(self) -> WebApp:
        assert self._web is not None, "NotifyPages.attach(web) first"
        return self._web

    def on_notify_settings(self, page: Page) -> Response:
        if (other := self.web._full(page)) is not None:
            return other
        assert page.session is not None
        user = page.session.username
        if page.request.method != "POST":
            return self._show(page, user)
        if not self.web._csrf_ok(page):
            return self.web._bad_form(page)
        form = page.request.form
        wanted = {
            (mailbox, event): value
            for key, value in form.items(multi=True)
            for event, _, mailbox in [key.partition(":")]
            if event in EVENTS and mailbox
        }
        try:
            changes = preferences.plan(self.web.db, user, wanted, form.get("language"))
        except ChoiceRefused as exc:
            error = page._(REFUSALS[exc.reason]).format(mailbox=exc.mailbox)
            return self._show(page, user, 400, error=error)
        try:
            if changes and self.audit is not None:
                self.audit.check_writable()
        except AuditUnavailable:
            return self._unrecorded(page, saved=False)
        preferences.apply(self.web.db, user, changes)
        context = request_context(page.request.environ)
        context.update(actor=user, actor_kind="user", credential_id=None)
        try:
            for change in changes:
                self.events.emit(
                    SubscriptionChanged(
                        **context,
                        mailbox=change.mailbox,
                        status=200,
                        setting=change.setting,
                        before=change.before,
                        after=change.after,
                    )
                )
        except AuditUnavailable:
            return self._unrecorded(page, saved=True)
        return self._show(page, user, saved=True)

    def _show(self, page: Page, user: str, status: int = 200, **values: Any) -> Response:
        roles = {name: box.roles for name, box in self.web._mailboxes(page).items()}
        prefs: Preferences = preferences.read(self.web.db, user, roles)
        return self.web.render(
            page,
            "notifications.html",
            status,
            prefs=prefs,
            choices=preferences.CHOICES,
            mail_active=self.mail_active,
            mail_language=self.mail_language,
            **values,
        )

    def _unrecorded(self, page: Page, *, saved: bool) -> Response:
        return self.web.render(
            page,
            "message.html",
            503,
            title=page._("Your notification settings were saved but not recorded")
            if saved
            else page._("Your notification settings cannot be saved right now"),
            text=page._("The audit trail cannot record this now. Try again later."),
            back=True,
        )
