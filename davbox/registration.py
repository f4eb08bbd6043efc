"""Self-registration: an account for a person whose mail address is in a configured domain.

Contract:
- ``request(address=, display_name=, password=, client=, language=)`` takes a
  registration from ``/register``. It refuses (``RegistrationError`` with
  ``reason``) an address that is not one plain address, that cannot be an
  account name (letters, digits and ``._@-``, 128 at most), or whose domain is
  not in ``web.registration.allowed_domains`` (exact, case-insensitive;
  ``*.example.org`` admits the subdomains of example.org, not example.org
  itself), and ``Throttled`` once the address has had
  ``requests_per_address`` or the client ``requests_per_client`` requests
  within ``throttle_window`` seconds. Otherwise it hashes the password at
  once (argon2) and, in one transaction with the queued mail, records:
  - for an address no account uses (as name or mail address): a pending
    request holding the hash and the SHA-256 of a fresh 256-bit token, and a
    mail with ``<base URL>/register/verify/<token>``; an earlier pending
    request for the address is replaced (its link stops working);
  - for an address an account already uses: a notice mail (no link, no
    account), so the answer is the same and nothing tells a visitor whether
    the address is known. It returns "link" or "notice" for the audit trail.
- ``check(token)`` says whether a link is good (pending, unexpired, domain
  still allowed) without using it; ``confirm(token)`` uses it once, atomically,
  and creates the account: name = the address in lower case (so people log
  in with their address), ``email`` = the address, source "local", the
  chosen password's hash, the page's language for mails, and the
  ``grants`` of the settings (mailboxes that do not exist are skipped and
  logged). Unknown, used, replaced and expired tokens all give None.
- The password is never stored, mailed or logged in clear; tokens are only
  in the mail. Mails never contain the display name (so the form cannot
  be used to put someone else's text in front of a stranger).
- The base URL of the link is ``server.public_url`` (else the listen
  address), never the request's Host header, which a visitor chooses.
- ``purge(now)`` forgets the hashes of expired requests and drops rows that
  no longer count for throttling; ``request`` calls it at most once a minute.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import delete, func, or_, select, update

from davbox.accounts import NAME_RE
from davbox.config.schema import RegistrationSettings
from davbox.db import Database, bump_epoch
from davbox.db.models import Mailbox, MailboxGrant, Registration, Role, User
from davbox.mail import Outbox
from davbox.mail.outbox import check_address
from davbox.passwords import hash_password, validate_new_password
from davbox.throttle import Throttled

SITE = "davbox"
PENDING, NOTICE, USED, REPLACED, EXPIRED = "pending", "notice", "used", "replaced", "expired"
MAX_DISPLAY_NAME = 256
MAX_TOKEN = 64  # token_urlsafe(32) is 43 characters

_log = logging.getLogger(__name__)


class RegistrationError(Exception):
    """A refused registration: ``reason`` "address" (not one plain address), "domain"
    (not in ``allowed_domains``) or "name" (it cannot be an account name, e.g. a "+")."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Pending:
    """A request waiting for its link, as ``davbox registration list`` shows it (no token)."""

    id: int
    email: str
    display_name: str
    client: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class Registered:
    """The account a confirmed link made."""

    name: str
    email: str
    grants: tuple[str, ...]


def normalize(address: str) -> str:
    """The address in lower case, if it is one plain mail address; else ``RegistrationError``."""
    address = address.strip()
    try:
        check_address(address)
    except ValueError:
        raise RegistrationError("address") from None
    return address.lower()


def domain_allowed(address: str, allowed: list[str]) -> bool:
    """Whether ``address``'s domain is listed (``*.d`` lists the subdomains of d, not d)."""
    domain = address.rpartition("@")[2].lower()
    for entry in allowed:
        if entry.startswith("*."):
            if domain.endswith(entry[1:]):
                return True
        elif domain == entry:
            return True
    return False


def account_name(address: str) -> str:
    """The account name for a (normalized) address: the address itself, if it fits a name."""
    if not NAME_RE.match(address) or address.endswith("."):
        raise RegistrationError("name")
    return address


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Registrations:
    def __init__(
        self,
        db: Database,
        outbox: Outbox,
        settings: RegistrationSettings,
        base_url: str,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self._purged_at = 0.0
        self._purge_lock = threading.Lock()

    # -- asking ------------------------------------------------------------------------

    def request(
        self,
        *,
        address: str,
        display_name: str,
        password: str,
        client: str,
        language: str,
    ) -> str:
        """Record a registration and queue its mail; "link" or "notice" (module contract).

        Raises ``RegistrationError``, ``Throttled``, or ``ValueError`` for a
        password ``validate_new_password`` refuses (callers check first).
        """
        email = normalize(address)
        if not domain_allowed(email, self.settings.allowed_domains):
            raise RegistrationError("domain")
        name = account_name(email)
        validate_new_password(password)
        now = time.time()
        self._maybe_purge(now)
        self._check_throttle(email, client, now)
        # Hashed for known addresses too: both answers take the same time.
        password_hash = hash_password(password)
        display_name = " ".join(display_name.split())[:MAX_DISPLAY_NAME]
        context = {
            "site": SITE,
            "address": email,
            "login_url": f"{self.base_url}/login",
            "hours": max(1, round(self.settings.link_lifetime / 3600)),
        }
        with self.db.session() as session:
            known = session.execute(
                select(User.id).where(or_(User.name == name, func.lower(User.email) == email))
            ).first()
            row = Registration(
                email=email,
                client=client[:64],
                display_name=display_name,
                language=language,
                created_at=now,
                expires_at=now + self.settings.link_lifetime,
            )
            if known:
                row.state = NOTICE
                template = "registration-exists"
            else:
                session.execute(
                    update(Registration)
                    .where(Registration.email == email, Registration.state == PENDING)
                    .values(state=REPLACED, digest=None, password_hash=None)
                )
                token = secrets.token_urlsafe(32)
                row.state = PENDING
                row.digest = digest(token)
                row.password_hash = password_hash
                context["url"] = f"{self.base_url}/register/verify/{token}"
                template = "registration-verify"
            session.add(row)
            rendered = self.outbox.templates.render(template, language, context)
            self.outbox.add(
                session, to=email, template=template, language=language, rendered=rendered
            )
        self.outbox.notify()
        return "notice" if known else "link"

    def _check_throttle(self, email: str, client: str, now: float) -> None:
        since = now - self.settings.throttle_window
        limits = [
            (Registration.email == email, self.settings.requests_per_address),
            (Registration.client == client[:64], self.settings.requests_per_client),
        ]
        worst = 0.0
        with self.db.session() as session:
            for clause, limit in limits:
                times = (
                    session.execute(
                        select(Registration.created_at)
                        .where(clause, Registration.created_at > since)
                        .order_by(Registration.created_at.desc())
                        .limit(limit)
                    )
                    .scalars()
                    .all()
                )
                if len(times) >= limit:
                    # Free again when the limit-th newest request leaves the window.
                    worst = max(worst, times[-1] + self.settings.throttle_window - now)
        if worst > 0:
            raise Throttled(int(worst) + 1)

    # -- the link ----------------------------------------------------------------------

    def check(self, token: str) -> bool:
        """Whether ``token`` is a pending, unexpired link of an allowed domain (not used up)."""
        return self._find(token, time.time()) is not None

    def _find(self, token: str, now: float) -> Registration | None:
        if not token or len(token) > MAX_TOKEN:
            return None
        with self.db.session() as session:
            row = session.execute(
                select(Registration).where(
                    Registration.digest == digest(token),
                    Registration.state == PENDING,
                    Registration.expires_at > now,
                )
            ).scalar_one_or_none()
            if row is None or not domain_allowed(row.email, self.settings.allowed_domains):
                return None
            session.expunge(row)
            return row

    def confirm(self, token: str) -> Registered | None:
        """Use the link once and create its account; None for any link that is not good."""
        now = time.time()
        row = self._find(token, now)
        if row is None:
            return None
        with self.db.session() as session:
            taken = session.execute(
                update(Registration)
                .where(Registration.id == row.id, Registration.state == PENDING)
                .values(state=USED, digest=None, password_hash=None)
            ).rowcount  # type: ignore[attr-defined]
            if taken != 1:  # another request used it first
                return None
            known = session.execute(
                select(User.id).where(
                    or_(User.name == row.email, func.lower(User.email) == row.email)
                )
            ).first()
            if known:  # made since (by an administrator): the link is spent
                return None
            user = User(
                name=row.email,
                password_hash=row.password_hash,
                email=row.email,
                display_name=row.display_name,
                source="local",
                language=row.language,
            )
            session.add(user)
            given = []
            for mailbox, role in self.settings.grants.items():
                box = session.execute(
                    select(Mailbox).where(Mailbox.name == mailbox)
                ).scalar_one_or_none()
                if box is None:
                    _log.warning("registration grant skipped: no mailbox named %r", mailbox)
                    continue
                session.add(MailboxGrant(mailbox=box, user=user, role=Role(role)))
                given.append(f"{mailbox}:{role}")
            bump_epoch(session)
        return Registered(row.email, row.email, tuple(given))

    # -- upkeep ------------------------------------------------------------------------

    def pending(self) -> list[Pending]:
        """Requests whose link still works, oldest first."""
        now = time.time()
        with self.db.session() as session:
            rows = session.execute(
                select(Registration)
                .where(Registration.state == PENDING, Registration.expires_at > now)
                .order_by(Registration.created_at)
            ).scalars()
            return [
                Pending(r.id, r.email, r.display_name, r.client, r.created_at, r.expires_at)
                for r in rows
            ]

    def purge(self, now: float | None = None) -> tuple[int, int]:
        """Expire overdue requests (their hashes go) and drop rows past the throttle window.

        Returns (expired, dropped).
        """
        now = time.time() if now is None else now
        with self.db.session() as session:
            expired = session.execute(
                update(Registration)
                .where(Registration.state == PENDING, Registration.expires_at <= now)
                .values(state=EXPIRED, digest=None, password_hash=None)
            ).rowcount  # type: ignore[attr-defined]
            dropped = session.execute(
                delete(Registration).where(
                    Registration.state != PENDING,
                    Registration.created_at < now - self.settings.throttle_window,
                )
            ).rowcount  # type: ignore[attr-defined]
        return expired, dropped

    def _maybe_purge(self, now: float) -> None:
        with self._purge_lock:
            if now - self._purged_at < 60:
                return
            self._purged_at = now
        self.purge(now)
