"""Who may see which mailbox: verified credentials and mailbox roles, cached.

Contract:
- ``AccessService.authenticate(name, password)`` returns a ``Principal`` or None.
  A verified credential is cached under an HMAC of (name, password) keyed by a
  per-installation secret, for ``auth.cache_ttl`` seconds: the cache holds no
  password, and a lookup costs a hash of the input, not an argon2 run.
- ``mailboxes_for(principal)`` maps mailbox names to ``MailboxAccess`` (id,
  storage key, roles) for the mailboxes the principal has a role in, directly
  or through a group.
- For accounts under two-factor login (``auth.two_factor_for``) the account
  password raises ``AppPasswordRequired``: WebDAV cannot ask for a code, so
  such clients must use an app password.
- Optional (``auth.basic_password_code``, off by default): such an account
  may instead send its password followed by a current TOTP code; the code is
  accepted once, and that exact credential then works from the same client
  address until unused for ``auth.basic_code_idle`` seconds.
- Failed logins are counted per account and client address
  (``davbox.throttle``); past the limits ``authenticate`` raises ``Throttled``
  without checking the password. A cached (known good) credential is never
  throttled.
- When an identity provider cannot answer (``ProviderUnavailable``) and no
  other provider verified the password, ``authenticate`` raises it: an outage
  is neither a wrong nor a right password. The attempt still counts for
  throttling.
- Both caches are dropped when the database's access epoch changes (password
  change, disable, removal, grants, group changes); ``refresh()`` checks the
  epoch at most every ``auth.refresh_interval`` seconds, so every server
  process sees such a change within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, replace

from sqlalchemy import or_, select

from davbox import app_passwords, twofactor
from davbox.db import Database
from davbox.db.models import Group, GroupMember, Mailbox, MailboxGrant, User
from davbox.policies.base import Principal
from davbox.providers.identity import Identity, IdentityProvider, ProviderUnavailable
from davbox.sessions import SessionStore
from davbox.throttle import LoginThrottle


def _ends_with_code(password: str) -> bool:
    return len(password) > 6 and password[-6:].isascii() and password[-6:].isdigit()


class AppPasswordRequired(Exception):
    """The account is under two-factor login: its password alone opens nothing."""

    def __init__(self, username: str) -> None:
        super().__init__(
            f"the account '{username}' uses two-factor login, so its password does not work"
            " in WebDAV clients; create an app password for this client (an administrator"
            f" can run: davbox app-password create {username} --label CLIENT) and use that"
        )


@dataclass(frozen=True)
class MailboxAccess:
    id: int
    name: str
    storage_key: str
    roles: frozenset[str]


class AccessService:
    def __init__(
        self,
        db: Database,
        identity_providers: list[IdentityProvider],
        *,
        cache_ttl: float,
        refresh_interval: float,
        throttle: LoginThrottle | None = None,
        two_factor_for: list[str] | None = None,
        sessions: SessionStore | None = None,
        basic_code_idle: float | None = None,
    ) -> None:
        self.sessions = sessions
        # Seconds a password+code credential stays usable unused; None: mode off.
        self.basic_code_idle = basic_code_idle if sessions is not None else None
        self.throttle = throttle
        self.two_factor_for = two_factor_for or []
        self.db = db
        self.providers = identity_providers
        self.cache_ttl = cache_ttl
        self.refresh_interval = refresh_interval
        self._secret = db.server_secret()
        self._lock = threading.Lock()
        self._epoch = db.current_epoch()
        self._checked_at = time.monotonic()
        self._credentials: dict[bytes, tuple[Principal, float]] = {}
        # Bumped whenever the caches are cleared: a result computed before a
        # clear must not be stored after it (it may predate the change).
        self._generation = 0
        self._mailboxes: dict[int, dict[str, MailboxAccess]] = {}

    def refresh(self, *, force: bool = False) -> bool:
        """Drop the caches if accounts or grants changed since the last look.

        Looks at most every ``refresh_interval`` seconds unless ``force`` is set
        (used when a caller names a mailbox missing from their cached list, so a
        mailbox granted a moment ago is found at once). Returns True if changed.
        """
        now = time.monotonic()
        if not force and now - self._checked_at < self.refresh_interval:
            return False
        self._checked_at = now
        epoch = self.db.current_epoch()
        if epoch == self._epoch:
            return False
        with self._lock:
            self._epoch = epoch
            self._generation += 1
            self._credentials.clear()
            self._mailboxes.clear()
        return True

    def authenticate(self, username: str, password: str, address: str = "") -> Principal | None:
        """The principal for valid credentials, else None; raise Throttled while blocked."""
        self.refresh()
        generation = self._generation
        key = hmac.new(
            self._secret, username.encode() + b"\0" + password.encode(), hashlib.sha256
        ).digest()
        cached = self._credentials.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        keys = LoginThrottle.keys(username, address)
        pending = self._begin_attempt(keys)
        grant = app_passwords.verify(self.db, self._secret, username, password, address)
        if grant is not None:
            principal = Principal(
                "user",
                grant.name,
                grant.user_id,
                self._groups_of(grant.user_id),
                scope=grant.mailboxes,
                read_only=grant.read_only,
                second_factor=True,
                credential_id=grant.id,
            )
            self._remember(key, principal, generation)
            if self.throttle is not None:
                self.throttle.succeeded(keys[0], pending)
            return principal
        if self.basic_code_idle is not None and _ends_with_code(password):
            principal = self._password_with_code(username, password, address)
            if principal is not None:
                if self.throttle is not None:
                    self.throttle.succeeded(keys[0], pending)
                return principal
        identity = self._verify_with_providers(username, password)
        if identity is None:
            return None  # the attempt stays recorded as a failure
        if self.refresh(force=True):  # the provider synced the account (LDAP groups)
            generation = self._generation
        groups = self._groups_of(identity.user_id)
        if self.requires_two_factor(identity, groups):
            # Stays counted as a failure: the answer must not confirm the password.
            raise AppPasswordRequired(identity.name)
        principal = Principal("user", identity.name, identity.user_id, groups)
        self._remember(key, principal, generation, identity.cache_ttl)
        if self.throttle is not None:
            self.throttle.succeeded(keys[0], pending)
        return principal

    def _password_with_code(self, username: str, password: str, address: str) -> Principal | None:
        """Optional mode for Basic-only clients: the account password followed by a TOTP code.

        The code is checked once; the exact credential then works from the same
        client address until unused for ``basic_code_idle`` seconds. Never
        cached in memory: each use is looked up (bound to the address).
        """
        assert self.sessions is not None and self.basic_code_idle is not None
        key = hmac.new(
            self._secret, b"basic\0" + username.encode() + b"\0" + password.encode(), hashlib.sha256
        ).hexdigest()
        user_id = self.sessions.find_credential(key, address, self.basic_code_idle)
        if user_id is None:
            identity = self._verify_with_providers(username, password[:-6])
            if identity is None or not twofactor.verify_code(self.db, identity.name, password[-6:]):
                return None
            self.sessions.open_credential(key, identity.user_id, address)
            user_id = identity.user_id
        principal = self.principal_for(username)
        if principal is None or principal.user_id != user_id:
            return None
        return replace(principal, second_factor=True)

    def _verify_with_providers(self, username: str, password: str) -> Identity | None:
        """Ask the identity providers in order; the first that knows the password wins.

        A provider that cannot answer does not stop later ones from verifying
        their own accounts (an account belongs to one provider); if none does,
        its ``ProviderUnavailable`` is raised, never None: the answer might
        have been yes, and a wrong-password answer would mislead.
        """
        outage: ProviderUnavailable | None = None
        for provider in self.providers:
            try:
                identity = provider.verify(username, password)
            except ProviderUnavailable as exc:
                outage = outage or exc
                continue
            if identity is not None:
                return identity
        if outage is not None:
            raise outage
        return None

    def requires_two_factor(self, identity: Identity, groups: frozenset[str] | None = None) -> bool:
        """Whether ``auth.two_factor_for`` puts this account under two-factor login."""
        if not self.two_factor_for:
            return False
        if groups is None:
            groups = self._groups_of(identity.user_id)
        return twofactor.required_for(
            self.db, identity.name, identity.user_id, groups, self.two_factor_for
        )

    def check_password(self, username: str, password: str, address: str) -> Identity | None:
        """The first login step on the web: the account password alone, throttled.

        Returns the identity (which opens nothing by itself: the caller decides
        whether a second factor follows) or None; raises ``Throttled``. App
        passwords are not accepted here: they are for WebDAV clients only.
        For an account with TOTP the earlier failures (wrong codes among them)
        stay counted until a code is right: the password buys no fresh guesses.
        """
        keys = LoginThrottle.keys(username, address)
        pending = self._begin_attempt(keys)
        identity = self._verify_with_providers(username, password)
        if identity is not None and self.throttle is not None:
            if twofactor.is_enrolled(self.db, identity.name):
                self.throttle.withdraw(pending)
            else:
                self.throttle.succeeded(keys[0], pending)
        return identity

    def check_second_factor(self, username: str, code: str, address: str) -> bool:
        """The second login step: a TOTP code or a recovery code, each accepted once.

        Counted by the same limiter as passwords, so codes cannot be guessed
        faster than passwords. Raises ``Throttled``.
        """
        keys = LoginThrottle.keys(username, address)
        pending = self._begin_attempt(keys)
        code = code.strip()
        ok = (
            twofactor.verify_code(self.db, username, code)
            if code.isdigit()
            else twofactor.use_recovery_code(self.db, username, code)
        )
        if ok and self.throttle is not None:
            self.throttle.succeeded(keys[0], pending)
        return ok

    def confirm_two_factor(
        self, username: str, secret: str, code: str, address: str, keep_session: int | None
    ) -> list[str] | None:
        """Web enrollment: install ``secret`` if ``code`` matches it (throttled like codes).

        Returns the new recovery codes, or None for a wrong code. Other web
        sessions of the account end.
        """
        keys = LoginThrottle.keys(username, address)
        pending = self._begin_attempt(keys)
        codes = twofactor.confirm(self.db, username, secret, code, keep_session=keep_session)
        if codes is not None and self.throttle is not None:
            self.throttle.succeeded(keys[0], pending)
        return codes

    def _begin_attempt(self, keys: list[str]) -> dict[str, int]:
        """Record an attempt before checking it (see ``LoginThrottle.begin``); raise Throttled."""
        return self.throttle.attempt(keys) if self.throttle is not None else {}

    def _remember(
        self, key: bytes, principal: Principal, generation: int, ttl: float | None = None
    ) -> None:
        ttl = self.cache_ttl if ttl is None else min(ttl, self.cache_ttl)
        if ttl > 0:
            with self._lock:
                if self._generation == generation:
                    self._credentials[key] = (principal, time.monotonic() + ttl)

    def principal_for(self, username: str) -> Principal | None:
        """The principal of an existing, enabled account (no password check: admin tools)."""
        with self.db.session() as session:
            row = session.execute(
                select(User.id, User.name).where(User.name == username, User.disabled.is_(False))
            ).first()
        if row is None:
            return None
        return Principal("user", row.name, row.id, self._groups_of(row.id))

    def profile(self, username: str) -> tuple[str, str | None]:
        """(display name, mail address) of an account, for clients that show them."""
        with self.db.session() as session:
            row = session.execute(
                select(User.display_name, User.email).where(User.name == username)
            ).first()
        return (row.display_name, row.email) if row is not None else ("", None)

    def _groups_of(self, user_id: int) -> frozenset[str]:
        with self.db.session() as session:
            names = session.execute(
                select(Group.name)
                .join(GroupMember, GroupMember.group_id == Group.id)
                .where(GroupMember.user_id == user_id)
            ).scalars()
            return frozenset(names)

    def mailboxes_for(self, principal: Principal) -> dict[str, MailboxAccess]:
        if principal.user_id is None:
            return {}
        result = self._mailboxes.get(principal.user_id)
        if result is None:
            generation = self._generation
            result = self._load_mailboxes(principal.user_id)
            with self._lock:
                if self._generation == generation:
                    self._mailboxes[principal.user_id] = result
        if principal.scope is not None:
            return {name: box for name, box in result.items() if name in principal.scope}
        return result

    def _load_mailboxes(self, user_id: int) -> dict[str, MailboxAccess]:
        groups = select(GroupMember.group_id).where(GroupMember.user_id == user_id)
        query = (
            select(Mailbox.id, Mailbox.name, Mailbox.storage_key, MailboxGrant.role)
            .join(MailboxGrant, MailboxGrant.mailbox_id == Mailbox.id)
            .join(User, User.id == user_id)
            .where(
                User.disabled.is_(False),
                or_(MailboxGrant.user_id == user_id, MailboxGrant.group_id.in_(groups)),
            )
        )
        roles: dict[str, set[str]] = {}
        info: dict[str, tuple[int, str]] = {}
        with self.db.session() as session:
            for box_id, name, key, role in session.execute(query):
                roles.setdefault(name, set()).add(role.value)
                info[name] = (box_id, key)
        return {
            name: MailboxAccess(info[name][0], name, info[name][1], frozenset(r))
            for name, r in roles.items()
        }
