"""One-time codes: the second factor of an external person who got a link (SecureTransfer).

Contract:
- ``OneTimeCodes.issue(link)`` makes a fresh 6-digit code (``secrets``),
  keeps only its HMAC (key derived from the installation secret, bound to
  the link id) with an expiry of ``ttl`` seconds, replaces any earlier code of
  the link, and hands the code to the link's channel. It refuses
  (``CodeRefused`` "too-soon") while the last code is younger than
  ``resend_after`` seconds, so a page reload or a script cannot flood
  someone's phone; ``CodeRefused`` "undeliverable" when the channel failed
  (the code is then withdrawn).
- ``check(link, code)`` is True once for the current code, compared in
  constant time; a wrong code counts an attempt and after ``max_attempts``
  the code is void ("a new code" must be asked for). Expired, used and void
  codes are never accepted. The outcome is returned, not raised: "ok",
  "wrong", "expired" (or none issued), "exhausted".
- Channels (``CodeChannel``): ``MailCodes`` queues a mail to the link's
  recipient through the outbox (separate from the mail with the link);
  ``WebhookCodes`` POSTs ``{"to", "text", "link_id"}`` as JSON to a
  configured HTTPS gateway (an SMS service), with an optional bearer token,
  and counts only a 2xx answer as sent. Neither logs the code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, select, update

from davbox.config import Settings
from davbox.db import Database
from davbox.db.models import LinkCode
from davbox.links import Link
from davbox.mail import Outbox

_log = logging.getLogger("davbox.codes")
DIGITS = 6


class CodeRefused(Exception):
    """No code was sent: ``reason`` is "too-soon" or "undeliverable"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


class CodeChannel(Protocol):
    name: str

    def deliver(self, link: Link, code: str, language: str) -> None:
        """Hand ``code`` on for the link's recipient; raise ``CodeRefused`` if that failed."""


@dataclass(frozen=True)
class CodeResult:
    outcome: str  # "ok", "wrong", "expired", "exhausted"

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class OneTimeCodes:
    def __init__(
        self,
        db: Database,
        channels: dict[str, CodeChannel],
        *,
        ttl: float = 600.0,
        resend_after: float = 60.0,
        max_attempts: int = 5,
    ) -> None:
        self.db = db
        self.channels = channels
        self.ttl = ttl
        self.resend_after = resend_after
        self.max_attempts = max_attempts
        self._key = hmac.new(db.server_secret(), b"davbox one-time codes", hashlib.sha256).digest()

    def _digest(self, link_id: int, code: str) -> str:
        return hmac.new(self._key, f"{link_id}\n{code}".encode(), hashlib.sha256).hexdigest()

    def pending(self, link: Link, now: float | None = None) -> bool:
        """Whether the link has a code that can still be entered."""
        now = time.time() if now is None else now
        with self.db.session() as session:
            row = session.execute(
                select(LinkCode).where(LinkCode.link_id == link.id).order_by(LinkCode.id.desc())
            ).scalar()
            return (
                row is not None
                and not row.used
                and row.expires_at > now
                and row.attempts < self.max_attempts
            )

    def issue(self, link: Link, language: str, now: float | None = None) -> None:
        """Send a new code for ``link`` through its channel (see the module's contract)."""
        channel = self.channels.get(link.code_channel)
        if channel is None:
            raise CodeRefused("undeliverable", f"no code channel {link.code_channel!r} configured")
        now = time.time() if now is None else now
        code = f"{secrets.randbelow(10**DIGITS):0{DIGITS}d}"
        with self.db.session() as session:
            last = session.execute(
                select(LinkCode.created_at)
                .where(LinkCode.link_id == link.id)
                .order_by(LinkCode.id.desc())
            ).scalar()
            if last is not None and now - last < self.resend_after:
                raise CodeRefused("too-soon")
            session.execute(delete(LinkCode).where(LinkCode.link_id == link.id))
            row = LinkCode(
                link_id=link.id,
                digest=self._digest(link.id, code),
                created_at=now,
                expires_at=now + self.ttl,
                attempts=0,
                used=False,
            )
            session.add(row)
            session.flush()
            code_id = row.id
        try:
            channel.deliver(link, code, language)
        except CodeRefused:
            with self.db.session() as session:
                session.execute(delete(LinkCode).where(LinkCode.id == code_id))
            raise

    def check(self, link: Link, code: str, now: float | None = None) -> CodeResult:
        now = time.time() if now is None else now
        given = "".join(ch for ch in code if not ch.isspace())
        with self.db.session() as session:
            row = session.execute(
                select(LinkCode).where(LinkCode.link_id == link.id).order_by(LinkCode.id.desc())
            ).scalar()
            if row is None or row.used or row.expires_at <= now:
                return CodeResult("expired")
            if row.attempts >= self.max_attempts:
                return CodeResult("exhausted")
            if not hmac.compare_digest(self._digest(link.id, given), row.digest):
                # Counted with a guarded UPDATE: parallel guesses cannot share an attempt.
                session.execute(
                    update(LinkCode)
                    .where(LinkCode.id == row.id)
                    .values(attempts=LinkCode.attempts + 1)
                )
                return CodeResult("wrong")
            used = session.execute(
                update(LinkCode)
                .where(LinkCode.id == row.id, LinkCode.used.is_(False))
                .values(used=True)
            )
            won = used.rowcount == 1  # type: ignore[attr-defined]
            return CodeResult("ok" if won else "expired")


class MailCodes:
    """Codes by mail to the link's recipient, as a mail of its own."""

    name = "mail"

    def __init__(self, outbox: Outbox, site: str) -> None:
        self.outbox = outbox
        self.site = site

    def deliver(self, link: Link, code: str, language: str) -> None:
        if not link.recipient:
            raise CodeRefused("undeliverable", "the link has no recipient address")
        self.outbox.enqueue(
            to=link.recipient,
            template="transfer-code",
            language=language,
            context={"code": code, "site": self.site, "minutes": 10},
        )


class WebhookCodes:
    """Codes through an HTTP gateway (an SMS service): one JSON POST per code."""

    name = "webhook"

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 10.0, text: str = ""
    ) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout
        self.text = text or "{code}"

    def deliver(self, link: Link, code: str, language: str) -> None:
        to = link.code_to or link.recipient
        text = self.text.replace("{code}", code)
        body = json.dumps(
            {"to": to, "text": text, "link_id": link.id, "language": language}
        ).encode()
        request = urllib.request.Request(  # noqa: S310 (the URL is the admin's, http(s) checked)
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError) as exc:
            _log.error("code gateway not reached for link %s: %s", link.id, exc)
            raise CodeRefused("undeliverable", "the code gateway could not be reached") from None
        if not 200 <= status < 300:
            _log.error("code gateway refused the code for link %s: HTTP %s", link.id, status)
            raise CodeRefused("undeliverable", f"the code gateway answered {status}")


def from_settings(settings: Settings, db: Database, outbox: Outbox | None) -> OneTimeCodes:
    """The codes service with the channels the settings give: mail (when mail is on), webhook."""
    channels: dict[str, CodeChannel] = {}
    if outbox is not None and settings.mail.active:
        channels["mail"] = MailCodes(outbox, "davbox")
    transfer = settings.transfer
    if transfer.webhook_url:
        token = transfer.webhook_token.get_secret_value() if transfer.webhook_token else None
        channels["webhook"] = WebhookCodes(transfer.webhook_url, token, text=transfer.webhook_text)
    return OneTimeCodes(db, channels, ttl=float(transfer.code_ttl))
