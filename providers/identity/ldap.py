"""LDAP accounts: passwords checked by binding to a directory (ldap3), accounts mirrored locally.

Contract:
- ``verify(username, password)`` returns an ``Identity`` when the directory
  accepts the password, else None: unknown name, wrong password, ambiguous
  search, a name held by a local account, a locally disabled account. An
  empty password is refused before anything is sent: an LDAP bind with an
  empty password is an unauthenticated bind, which servers answer with
  success. Login names must be valid davbox account names (ASCII letters,
  digits, ``. _ @ -``). An unknown name costs a bind like a known one, so
  answer times do not tell which names exist.
- Raises ``ProviderUnavailable`` when the directory cannot answer: connection
  refused, no answer within ``timeout`` seconds, TLS failure (certificate not
  trusted or not naming the host), the service account refused, the server
  busy. One log line (logger ``davbox.auth``) when an outage begins, a reminder
  every five minutes while it lasts, one when the directory answers again.
- The account is found by search-then-bind (``user_search_base`` and
  ``user_filter``, the name escaped with ``escape_filter_chars``, searched as
  ``bind_dn`` or anonymously; exactly one entry must match) or by
  ``user_dn_template`` (the name escaped as a DN value). Referrals are never
  followed: credentials go to the configured server only.
- A verified login creates or updates the local ``User`` named by the entry's
  ``username_attribute``, with ``source="ldap"`` and no password hash (the sql
  provider never verifies it), and copies displayName (else cn) and mail.
  Membership in the davbox groups named in ``group_map`` is set to match the
  directory's groups, added and removed; other groups are left alone. Any
  change bumps the access epoch, so every process's caches refresh.
- Service connections are pooled (at most ``pool_size``; one found dead is
  replaced once); each login binds on a fresh connection of its own.
  Passwords, including the service account's, are never logged.
"""

from __future__ import annotations

import ast
import logging
import queue
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from ldap3 import ANONYMOUS, BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPCommunicationError, LDAPExceptionError, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from davbox.accounts import NAME_RE
from davbox.config.schema import LdapProviderSettings
from davbox.db import Database, bump_epoch
from davbox.db.models import Group, GroupMember, User
from davbox.providers.identity import Identity, IdentityProvider, ProviderUnavailable

log = logging.getLogger("davbox.auth")

SUCCESS = 0
SIZE_LIMIT_EXCEEDED = 4
NO_SUCH_OBJECT = 32
INSUFFICIENT_ACCESS = 50
# Result codes that mean "cannot answer now" rather than "no".
OUTAGE_CODES = {3, 11, 51, 52, 80}  # timeLimit, adminLimit, busy, unavailable, other
LOOPBACK = ("127.0.0.1", "::1", "[::1]", "localhost")
Search = Callable[[str, str, str, list[str]], list["Entry"]]


@dataclass(frozen=True)
class Entry:
    """A directory entry: its DN and its attributes (lower-case names, text values)."""

    dn: str
    attributes: dict[str, list[str]]

    def first(self, name: str) -> str | None:
        values = self.attributes.get(name.lower())
        return values[0] if values else None


class LdapIdentityProvider(IdentityProvider):
    name = "ldap"

    def __init__(self, db: Database, settings: LdapProviderSettings) -> None:
        self.db = db
        self.settings = settings
        self.url = settings.url.rstrip("/")
        self._tls = _Tls(settings.ca_file, settings.verify_tls)
        self.server = self._new_server()
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(settings.pool_size)
        self._outage = _OutageLog(self.url)
        self._attributes = sorted({settings.username_attribute, "displayName", "cn", "mail"})
        if (
            not self.server.ssl
            and not settings.start_tls
            and self.server.host.lower() not in LOOPBACK
        ):
            log.warning(
                "LDAP server %s: passwords are sent unencrypted; use ldaps:// or start_tls: true",
                self.url,
            )

    # --- the contract -----------------------------------------------------------

    def verify(self, username: str, password: str) -> Identity | None:
        if not password or len(password) > 4096:
            return None  # never an unauthenticated bind
        if not NAME_RE.match(username):
            # Directories ignore case and surrounding spaces in names: " lena"
            # would be lena under a name of its own, with a throttle count of
            # its own. Only plain names are asked for (and escaped all the same).
            return None
        try:
            found = self._check(username, password)
        except ProviderUnavailable as exc:
            self._outage.failed(str(exc))
            raise
        except (LDAPExceptionError, OSError) as exc:
            message = f"LDAP server {self.url} unreachable: {self._describe(exc)}"
            self._outage.failed(message)
            raise ProviderUnavailable(message) from None
        self._outage.recovered()
        if found is None:
            return None
        entry, groups = found
        return self._provision(entry, groups)

    # --- talking to the directory ----------------------------------------------

    def _check(self, username: str, password: str) -> tuple[Entry, set[str]] | None:
        """The entry and mapped davbox groups for a password the directory accepts."""
        settings = self.settings
        if settings.user_dn_template is not None:
            dn = settings.user_dn_template.format(username=escape_rdn(username))
            conn = self._bind(dn, password)
            if conn is None:
                return None
            try:
                own = self._search(conn, dn, "(objectClass=*)", BASE, self._attributes, quiet=True)
                if not own:
                    log.warning(
                        "LDAP login refused: %s may not read its own entry (allow 'by self read')",
                        dn,
                    )
                    return None
                entry = own[0]
                if settings.bind_dn is None:  # no service account: look up groups as the user

                    def as_user(base: str, flt: str, scope: str, attrs: list[str]) -> list[Entry]:
                        return self._search(conn, base, flt, scope, attrs)

                    return self._with_groups(entry, as_user)
            finally:
                _close(conn)
            return self._with_groups(entry, self._service_search)

        assert settings.user_search_base is not None  # the settings require one of the two
        entries = self._service_search(
            settings.user_search_base,
            settings.user_filter.format(username=escape_filter_chars(username)),
            SUBTREE,
            self._attributes,
            2,
        )
        if len(entries) != 1:
            if entries:
                log.warning(
                    "LDAP login refused: the filter matches several entries for %r", username
                )
            # As long as a real check: bind to a name that does not exist.
            nobody = f"cn=davbox-nobody-{secrets.token_hex(8)},{settings.user_search_base}"
            conn = self._bind(nobody, password)
            if conn is not None:
                _close(conn)
            return None
        conn = self._bind(entries[0].dn, password)
        if conn is None:
            return None
        _close(conn)
        return self._with_groups(entries[0], self._service_search)

    def _with_groups(self, entry: Entry, search: Search) -> tuple[Entry, set[str]] | None:
        """The entry with the davbox groups it maps to (those in ``group_map``)."""
        settings = self.settings
        name = entry.first(settings.username_attribute)
        if name is None or not NAME_RE.match(name) or name.endswith("."):
            log.warning(
                "LDAP login refused: %s has no usable %s for a davbox account name",
                entry.dn,
                settings.username_attribute,
            )
            return None
        if settings.group_search_base is None:
            return entry, set()
        found = search(
            settings.group_search_base,
            settings.group_filter.format(
                dn=escape_filter_chars(entry.dn), username=escape_filter_chars(name)
            ),
            SUBTREE,
            [settings.group_attribute],
        )
        names = {
            value.casefold()
            for group in found
            for value in group.attributes.get(settings.group_attribute.lower(), [])
        }
        mapped = {ours for theirs, ours in settings.group_map.items() if theirs.casefold() in names}
        return entry, mapped

    def _new_server(self) -> Server:
        # One per connection: a Server remembers failed addresses and skips
        # them for seconds, which would outlast the directory's restart.
        return Server(self.url, tls=self._tls, connect_timeout=self.settings.timeout, get_info=NONE)

    def _connect(self, user: str | None, password: str | None) -> Connection:
        conn = Connection(
            self._new_server(),
            user=user,
            password=password,
            authentication=SIMPLE if user else ANONYMOUS,
            receive_timeout=self.settings.timeout,
            raise_exceptions=False,
            auto_referrals=False,
            read_only=True,
        )
        try:
            conn.open()
            if self.settings.start_tls:
                conn.start_tls()
        except BaseException:
            _close(conn)
            raise
        return conn

    def _bind(self, dn: str, password: str) -> Connection | None:
        """A connection bound as ``dn``, or None if the directory says no."""
        conn = self._connect(dn, password)
        if conn.bind():
            return conn
        code, description = conn.result["result"], conn.result["description"]
        _close(conn)
        if code in OUTAGE_CODES:
            raise ProviderUnavailable(
                f"LDAP server {self.url} cannot check passwords now: {description}"
            )
        return None

    def _open_service(self) -> Connection:
        settings = self.settings
        secret = settings.bind_password.get_secret_value() if settings.bind_password else None
        conn = self._connect(settings.bind_dn, secret)
        if not conn.bind():
            description = conn.result["description"]
            _close(conn)
            raise ProviderUnavailable(
                f"LDAP server {self.url} refused the service account"
                f" {settings.bind_dn or '(anonymous)'}: {description}"
            )
        return conn

    def _service_search(
        self, base: str, flt: str, scope: str, attributes: list[str], size_limit: int = 0
    ) -> list[Entry]:
        """Search on a pooled service connection; a pooled one found dead is replaced once."""
        if not self._slots.acquire(timeout=self.settings.timeout):
            raise ProviderUnavailable(
                f"LDAP server {self.url}: all {self.settings.pool_size} service connections"
                f" stayed busy for {self.settings.timeout} s (raise pool_size?)"
            )
        try:
            for attempt in (1, 2):
                fresh = attempt == 2
                conn = None if fresh else self._take_idle()
                reused = conn is not None
                if conn is None:
                    conn = self._open_service()
                try:
                    entries = self._search(conn, base, flt, scope, attributes, size_limit)
                except LDAPCommunicationError:
                    _close(conn)
                    if not reused:
                        raise
                    self._drain()  # the server dropped it, and likely the others too
                    continue
                except BaseException:
                    _close(conn)
                    raise
                self._idle.put(conn)
                return entries
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the pooled service connections (new ones open on the next login)."""
        self._drain()

    def _take_idle(self) -> Connection | None:
        while True:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                return None
            if not conn.closed:
                return conn

    def _drain(self) -> None:
        while (conn := self._take_idle()) is not None:
            _close(conn)

    def _search(
        self,
        conn: Connection,
        base: str,
        flt: str,
        scope: str,
        attributes: list[str],
        size_limit: int = 0,
        *,
        quiet: bool = False,
    ) -> list[Entry]:
        """Entries found; ``quiet``: an entry we may not see is no entry (else an outage)."""
        conn.search(
            base,
            flt,
            search_scope=scope,
            attributes=attributes,
            size_limit=size_limit,
            time_limit=self.settings.timeout,
        )
        code = conn.result["result"]
        if code not in (SUCCESS, SIZE_LIMIT_EXCEEDED) and not (
            quiet and code in (NO_SUCH_OBJECT, INSUFFICIENT_ACCESS)
        ):
            raise ProviderUnavailable(
                f"LDAP server {self.url}: search in {base} failed: {conn.result['description']}"
            )
        return [
            Entry(item["dn"], {k.lower(): _texts(v) for k, v in item["attributes"].items()})
            for item in conn.response or []
            if item.get("type") == "searchResEntry"
        ]

    def _describe(self, exc: BaseException) -> str:
        """ldap3's message without its nesting (``"('text',)"``) and C source positions."""
        text = str(exc)
        for _ in range(3):
            if not (text.startswith("(") and text.endswith(")")):
                break
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                break
            text = str(value[0] if isinstance(value, tuple) and value else value)
        text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
        text = re.sub(r"^(wrap socket error|socket ssl wrapping error): ", "", text)
        if isinstance(exc, LDAPStartTLSError):
            text = f"StartTLS failed: {text}"
        return text or type(exc).__name__

    # --- the local account --------------------------------------------------------

    def _provision(self, entry: Entry, groups: set[str]) -> Identity | None:
        for attempt in (1, 2):
            try:
                with self.db.session() as session:
                    return self._store(session, entry, groups)
            except IntegrityError:
                if attempt == 2:  # a parallel login made the same rows: read them again
                    raise
        return None  # pragma: no cover

    def _store(self, session: Session, entry: Entry, groups: set[str]) -> Identity | None:
        name = entry.first(self.settings.username_attribute)
        assert name is not None  # checked in _with_groups
        user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
        changed = False
        if user is None:
            user = User(name=name, source="ldap", password_hash=None)
            session.add(user)
            session.flush()
            changed = True
        elif user.source != "ldap":
            log.warning(
                "LDAP login as %r refused: a local account of that name exists"
                " (an LDAP login never takes over a local account)",
                name,
            )
            return None
        if user.disabled:
            return None
        display = (entry.first("displayName") or entry.first("cn") or "")[:256]
        mail = entry.first("mail")
        if user.display_name != display:
            user.display_name = display
        if user.email != mail:
            user.email = mail[:320] if mail else None
        if self._sync_groups(session, user.id, groups):
            changed = True
        if changed:
            bump_epoch(session)
        return Identity(user.id, user.name, user.is_admin, self.settings.cache_ttl)

    def _sync_groups(self, session: Session, user_id: int, wanted: set[str]) -> bool:
        """Make the user a member of exactly ``wanted`` among the mapped davbox groups."""
        managed = set(self.settings.group_map.values())
        if not managed:
            return False
        existing = {
            group.name: group
            for group in session.execute(select(Group).where(Group.name.in_(managed))).scalars()
        }
        member_of = set(
            session.execute(
                select(GroupMember.group_id).where(
                    GroupMember.user_id == user_id,
                    GroupMember.group_id.in_([g.id for g in existing.values()]),
                )
            ).scalars()
        )
        changed = False
        for name in sorted(managed):
            group = existing.get(name)
            if name in wanted:
                if group is None:
                    group = Group(name=name)
                    session.add(group)
                    session.flush()
                if group.id not in member_of:
                    session.add(GroupMember(group_id=group.id, user_id=user_id))
                    changed = True
            elif group is not None and group.id in member_of:
                session.execute(
                    delete(GroupMember).where(
                        GroupMember.group_id == group.id, GroupMember.user_id == user_id
                    )
                )
                changed = True
        return changed


class _OutageLog:
    """Log an outage once (and every ``REPEAT`` seconds while it lasts), and its end."""

    REPEAT = 300.0

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._logged_at = 0.0
        self._refused = 0

    def failed(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._refused += 1
            first = self._down_since is None
            if not first and now - self._logged_at < self.REPEAT:
                return
            if first:
                self._down_since = now
            self._logged_at = now
            refused = self._refused
        if first:
            log.error("%s", message)
        else:
            log.error("%s (still; %d logins refused since the outage began)", message, refused)

    def recovered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is None:
                return
            seconds = time.monotonic() - self._down_since
            refused = self._refused
            self._down_since = None
            self._refused = 0
        log.warning(
            "LDAP server %s answers again after %.0f s; %d logins were refused meanwhile",
            self.url,
            seconds,
            refused,
        )


class _Tls(Tls):
    """ldap3's TLS settings, with certificate and host name checked by Python's ``ssl``.

    ldap3 2.9 turns the context's host name check off and calls
    ``ssl.match_hostname`` instead, which Python 3.12 removed; here the
    standard context checks both (IP addresses too) and sends SNI.
    """

    def __init__(self, ca_file: str | None, verify: bool) -> None:
        super().__init__(
            validate=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE, ca_certs_file=ca_file
        )
        self.context = ssl.create_default_context(cafile=ca_file)
        if not verify:
            self.context.check_hostname = False
            self.context.verify_mode = ssl.CERT_NONE

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        connection.socket = self.context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )


def _texts(value: object) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]


def _close(conn: Connection) -> None:
    with suppress(LDAPExceptionError, OSError):
        conn.unbind()
    # unbind() leaves the socket of a half-opened connection (failed TLS) open.
    with suppress(OSError, AttributeError):
        conn.socket.close()
