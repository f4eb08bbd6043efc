"""The outbox: mails queued in the database until the sender has handed them to SMTP.

Contract:
- ``enqueue(to=, template=, language=, context=)`` renders the mail (raising
  ``TemplateProblem`` or ``ValueError`` for a bad address at once), stores it
  as "queued", due now, and returns its id. It only writes one row: callers
  in a request pay for an insert, never for SMTP. ``dedupe_key`` (optional)
  queues a mail at most once per key, across processes (a unique column):
  a second ``enqueue`` with the key returns the first mail's id.
- ``add(session, ...)`` does the same inside the caller's transaction (the
  digest job queues a mail and removes the items it lists in one commit).
- States: "queued" -> "sending" (claimed) -> "sent", back to "queued" with
  a later ``next_attempt_at`` after a temporary failure, or "failed" (a
  permanent refusal, or tried for too long).
- ``claim(now, lease, limit)`` takes due mails with one UPDATE whose WHERE
  repeats the due condition (queued and due, or sending with an expired
  lease): two senders, in this or another process, never hold one mail at
  once. The claim token guards every later change of the row, so a sender
  whose lease ran out cannot mark a mail another sender has taken since.
  A sender that dies mid-send leaves the mail to be taken again when its
  lease runs out: delivery is at least once; the Message-ID stays the same.
- A sent mail's bodies are emptied (they may carry someone's link); its
  recipient, template, subject and times stay for ``davbox mail outbox``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.errors import MessageError
from email.headerregistry import Address
from email.utils import make_msgid
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from davbox.db import Database
from davbox.db.models import OutboxMail
from davbox.mail.render import MailTemplates, Rendered

QUEUED, SENDING, SENT, FAILED = "queued", "sending", "sent", "failed"
STATES = (QUEUED, SENDING, SENT, FAILED)


def check_address(address: str) -> str:
    """``address`` if it is one plain mail address (no name, no line breaks); else ValueError."""
    if not address or any(c in address for c in "\r\n\t ,;<>\"'"):
        raise ValueError(f"{address!r} is not a mail address")
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError, MessageError) as exc:
        raise ValueError(f"{address!r} is not a mail address") from exc
    if not parsed.username or ("." not in parsed.domain and parsed.domain != "localhost"):
        raise ValueError(f"{address!r} is not a mail address")
    return address


@dataclass(frozen=True)
class Claimed:
    """A mail a sender holds: what it needs to send it, and its claim token."""

    id: int
    recipient: str
    subject: str
    text: str
    html: str | None
    message_id: str
    attempts: int
    created_at: float
    claim: str


@dataclass(frozen=True)
class MailRow:
    """A mail as ``davbox mail outbox`` shows it."""

    id: int
    recipient: str
    template: str
    subject: str
    state: str
    attempts: int
    created_at: float
    next_attempt_at: float
    sent_at: float | None
    last_error: str


class Outbox:
    def __init__(
        self,
        db: Database,
        templates: MailTemplates | None = None,
        *,
        sender_domain: str = "localhost",
    ) -> None:
        self.db = db
        self.templates = templates or MailTemplates()
        self.sender_domain = sender_domain
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def on_enqueue(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each mail queued by this process (the sender's wake-up)."""
        with self._lock:
            self._listeners.append(listener)

    # -- queueing ----------------------------------------------------------------------

    def enqueue(
        self,
        *,
        to: str,
        template: str,
        language: str,
        context: Mapping[str, Any],
        dedupe_key: str | None = None,
    ) -> int:
        """Render and queue one mail; return its id (see the module's contract)."""
        rendered = self.templates.render(template, language, context)
        with self.db.session() as session:
            mail_id = self.add(
                session,
                to=to,
                template=template,
                language=language,
                rendered=rendered,
                dedupe_key=dedupe_key,
            )
        self.notify()
        return mail_id

    def add(
        self,
        session: Session,
        *,
        to: str,
        template: str,
        language: str,
        rendered: Rendered,
        dedupe_key: str | None = None,
        now: float | None = None,
    ) -> int:
        """Queue a rendered mail in ``session``'s transaction; return its id."""
        check_address(to)
        now = time.time() if now is None else now
        row = OutboxMail(
            recipient=to,
            template=template,
            language=language,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            message_id=make_msgid("davbox", self.sender_domain),
            dedupe_key=dedupe_key,
            state=QUEUED,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
            last_error="",
        )
        if dedupe_key is None:
            session.add(row)
            session.flush()
            return row.id
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
            return row.id
        except IntegrityError:
            existing = session.execute(
                select(OutboxMail.id).where(OutboxMail.dedupe_key == dedupe_key)
            ).scalar_one()
            return int(existing)

    def notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    # -- sending -----------------------------------------------------------------------

    @staticmethod
    def _due(now: float) -> Any:
        return or_(
            and_(OutboxMail.state == QUEUED, OutboxMail.next_attempt_at <= now),
            and_(OutboxMail.state == SENDING, OutboxMail.lease_until < now),
        )

    def claim(self, now: float, lease: float, limit: int) -> list[Claimed]:
        """Take up to ``limit`` due mails for ``lease`` seconds (oldest due first)."""
        token = secrets.token_hex(8)
        with self.db.engine.begin() as conn:
            ids = (
                conn.execute(
                    select(OutboxMail.id)
                    .where(self._due(now))
                    .order_by(OutboxMail.next_attempt_at, OutboxMail.id)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
            if not ids:
                return []
            conn.execute(
                update(OutboxMail)
                .where(OutboxMail.id.in_(ids), self._due(now))
                .values(
                    state=SENDING,
                    claim=token,
                    lease_until=now + lease,
                    attempts=OutboxMail.attempts + 1,
                )
            )
            rows = conn.execute(
                select(OutboxMail)
                .where(OutboxMail.id.in_(ids), OutboxMail.claim == token)
                .order_by(OutboxMail.id)
            ).all()
        return [
            Claimed(
                r.id,
                r.recipient,
                r.subject,
                r.text,
                r.html,
                r.message_id,
                r.attempts,
                r.created_at,
                token,
            )
            for r in rows
        ]

    def _finish(self, mail: Claimed, **values: Any) -> bool:
        with self.db.engine.begin() as conn:
            result = conn.execute(
                update(OutboxMail)
                .where(OutboxMail.id == mail.id, OutboxMail.claim == mail.claim)
                .values(claim=None, lease_until=None, **values)
            )
        return result.rowcount == 1

    def sent(self, mail: Claimed, now: float | None = None) -> bool:
        """Mark a claimed mail sent (its bodies are emptied); False if the claim was lost."""
        when = time.time() if now is None else now
        return self._finish(mail, state=SENT, sent_at=when, text="", html=None, last_error="")

    def retry(self, mail: Claimed, error: str, at: float, *, uncount: bool = False) -> bool:
        """Put a claimed mail back in the queue, due at ``at`` (``uncount``: it was not
        tried after all, so its claim does not count as a try)."""
        values: dict[str, Any] = {
            "state": QUEUED,
            "next_attempt_at": at,
            "last_error": error[:1000],
        }
        if uncount:
            values["attempts"] = OutboxMail.attempts - 1
        return self._finish(mail, **values)

    def failed(self, mail: Claimed, error: str) -> bool:
        """Give a claimed mail up for good."""
        return self._finish(mail, state=FAILED, last_error=error[:1000])

    # -- looking -----------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the earliest queued mail is due (None: nothing queued)."""
        with self.db.engine.connect() as conn:
            return conn.execute(
                select(func.min(OutboxMail.next_attempt_at)).where(OutboxMail.state == QUEUED)
            ).scalar()

    def counts(self) -> dict[str, int]:
        """Number of mails in each state (every state present, 0 when none)."""
        with self.db.engine.connect() as conn:
            found = dict(
                conn.execute(
                    select(OutboxMail.state, func.count()).group_by(OutboxMail.state)
                ).all()
            )
        return {state: int(found.get(state, 0)) for state in STATES}

    def rows(self, state: str | None = None, limit: int = 50) -> list[MailRow]:
        """The newest mails (of one ``state`` if given), newest first."""
        query = select(OutboxMail).order_by(OutboxMail.id.desc()).limit(limit)
        if state is not None:
            query = query.where(OutboxMail.state == state)
        with self.db.engine.connect() as conn:
            return [
                MailRow(
                    r.id,
                    r.recipient,
                    r.template,
                    r.subject,
                    r.state,
                    r.attempts,
                    r.created_at,
                    r.next_attempt_at,
                    r.sent_at,
                    r.last_error,
                )
                for r in conn.execute(query)
            ]
