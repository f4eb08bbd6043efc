"""SecureTransfer on top of share links and mail: send a file to a person, or ask one of them.

Contract:
- ``send(creator, "MAILBOX/PATH", to=...)`` makes a **read** link to the file
  or folder that expires after ``expires`` (``transfer.expires``, 5 days by
  default), records ``to`` as its recipient, and queues one mail to them with
  the link, the creator's name and message. Unless ``code`` is False (default
  ``transfer.require_code``) the link asks for a one-time code first
  (``davbox.codes``): by mail to the recipient, or, with ``phone``, through
  the configured SMS gateway (``transfer.webhook_url``). The code is never in
  the mail with the link. The creator is told of each fetch when their
  account has a mail address (``notify``).
- ``request(creator, "MAILBOX/FOLDER", from_=...)`` makes an upload-only
  (**drop**) link to the folder with an upload window (``upload_window``,
  default ``transfer.upload_window``, else the link's life) and queues a
  mail to the person asked; the creator, who must have a mail address, is
  told when files arrive (the link notifies its creator of drops).
- Both go through ``ShareService.create``: the creator's share right and
  the ``links`` policies apply (a one-time code counts as a password for
  ``require_password``). They refuse (``TransferError``) when mail is off
  (nothing could reach the person), for an address that is not one plain
  address, or a code by phone without a gateway. The link's token is
  only in the returned URL and the recipient's mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from davbox import durations
from davbox.accounts import AdminError
from davbox.config import Settings
from davbox.db.models import User
from davbox.links import Link
from davbox.mail import Outbox
from davbox.mail.outbox import check_address
from davbox.notify import subscriptions
from davbox.policies.base import Principal
from davbox.sharing import ShareService

SITE = "davbox"
MAX_MESSAGE = 4000


class TransferError(AdminError):
    """A refused send or request; ``str()`` says why."""


@dataclass(frozen=True)
class Transfer:
    link: Link
    url: str  # carries the token: shown to the creator once, and mailed to the person
    mail_id: int


class TransferService:
    def __init__(
        self, shares: ShareService, outbox: Outbox, settings: Settings, public_url: str
    ) -> None:
        self.shares = shares
        self.outbox = outbox
        self.settings = settings
        self.public_url = public_url.rstrip("/")

    def send(
        self,
        creator: Principal | None,
        target: str,
        *,
        to: str,
        name: str = "",
        message: str = "",
        expires: timedelta | None = None,
        code: bool | None = None,
        phone: str | None = None,
        language: str | None = None,
        notify: bool = True,
        request: dict[str, Any] | None = None,
    ) -> Transfer:
        """Send a read link to ``to`` (see the module's contract)."""
        self._check(to, message, language)
        wants_code = self.settings.transfer.require_code if code is None else code
        channel = ""
        if phone is not None:
            if not wants_code and code is not None:
                raise TransferError("--phone is where the code goes; it cannot go with --no-code")
            if self.settings.transfer.webhook_url is None:
                raise TransferError("codes by phone need an SMS gateway (transfer.webhook_url)")
            channel = "webhook"
        elif wants_code:
            channel = "mail"
        life = expires or durations.parse_duration(self.settings.transfer.expires)
        link, token = self.shares.create(
            creator,
            target,
            "read",
            expires_at=datetime.now(UTC) + life,
            label=f"sent to {to}"[:256],
            note=message,
            recipient=to,
            code_channel=channel,
            code_to=phone,
            request=request,
        )
        url = f"{self.public_url}/s/{token}"
        if notify and creator is not None and self._address_of(creator.name):
            subscriptions.set_link_notify(self.shares.db, link.id, uploads=False, downloads=True)
        mail_id = self._mail(
            link,
            "transfer-sent",
            to,
            creator,
            name,
            message,
            url,
            language,
            folder=link.is_folder,
            expires=_when(link.expires_at),
            code=channel,
        )
        return Transfer(link, url, mail_id)

    def request(
        self,
        creator: Principal,
        target: str,
        *,
        from_: str,
        name: str = "",
        message: str = "",
        upload_window: timedelta | None = None,
        expires: timedelta | None = None,
        language: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> Transfer:
        """Ask ``from_`` to upload into a folder (see the module's contract)."""
        self._check(from_, message, language)
        if not self._address_of(creator.name):
            raise TransferError(
                f"{creator.name!r} has no mail address to be told when files arrive"
                f" (davbox notify address {creator.name} ADDRESS)"
            )
        life = expires or durations.parse_duration(self.settings.transfer.expires)
        default_window = self.settings.transfer.upload_window
        window = upload_window or (
            durations.parse_duration(default_window) if default_window else None
        )
        if window is not None and window > life:
            raise TransferError("the upload window cannot be longer than the link lives")
        link, token = self.shares.create(
            creator,
            target,
            "drop",
            expires_at=datetime.now(UTC) + life,
            upload_window=window,
            label=f"asked of {from_}"[:256],
            note=message,
            recipient=from_,
            request=request,
        )
        subscriptions.set_link_notify(self.shares.db, link.id, uploads=True, downloads=False)
        url = f"{self.public_url}/s/{token}"
        mail_id = self._mail(
            link,
            "transfer-requested",
            from_,
            creator,
            name,
            message,
            url,
            language,
            folder=True,
            until=_when(link.upload_until or link.expires_at),
        )
        return Transfer(link, url, mail_id)

    # -- helpers ------------------------------------------------------------------

    def _mail(
        self,
        link: Link,
        template: str,
        to: str,
        creator: Principal | None,
        name: str,
        message: str,
        url: str,
        language: str | None,
        **details: Any,
    ) -> int:
        """Queue the mail to the person: who sends, their message, the link and ``details``.

        A link whose mail cannot be queued is revoked at once: nobody got it.
        """
        try:
            return self._enqueue(template, to, creator, name, message, url, language, details)
        except Exception:
            self.shares.revoke(None, link.id)
            raise

    def _enqueue(
        self,
        template: str,
        to: str,
        creator: Principal | None,
        name: str,
        message: str,
        url: str,
        language: str | None,
        details: dict[str, Any],
    ) -> int:
        return self.outbox.enqueue(
            to=to,
            template=template,
            language=language or self.settings.mail.language,
            context={
                "sender": self._sender(creator),
                "recipient_name": name,
                "message": message,
                "url": url,
                "site": SITE,
                **details,
            },
        )

    def _check(self, address: str, message: str, language: str | None) -> None:
        if not self.settings.mail.active:
            raise TransferError("mail is off (no mail.host): the link could not reach anyone")
        try:
            check_address(address)
        except ValueError as exc:
            raise TransferError(str(exc)) from None
        if len(message) > MAX_MESSAGE:
            raise TransferError(f"the message is limited to {MAX_MESSAGE} characters")
        if language not in (None, "nl", "en"):
            raise TransferError(f"unknown language {language!r}; use nl or en")

    def _address_of(self, name: str) -> str | None:
        with self.shares.db.session() as session:
            return session.execute(select(User.email).where(User.name == name)).scalar()

    def _sender(self, creator: Principal | None) -> str:
        if creator is None:
            return SITE
        with self.shares.db.session() as session:
            row = session.execute(
                select(User.display_name, User.name).where(User.name == creator.name)
            ).first()
        if row is None:
            return creator.name
        return row.display_name or row.name


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if moment else ""
