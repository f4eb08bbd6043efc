"""The configuration schema: every key davbox reads, with its type and default.

Contract: models forbid unknown keys and use strict scalar types (a quoted
number is not an int, ``no`` is not a bool); sizes accept units (``64KiB``).
``config.example.yaml`` documents every key; a test keeps the two in step.
"""

from __future__ import annotations

import ipaddress
import os
import string
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)

from davbox.durations import is_duration

AUDIT_FLOOR_DAYS = 365  # audit records are kept at least a year, whatever the config says


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Section):
    cert: StrictStr = Field(description="PEM certificate chain file")
    key: StrictStr = Field(description="PEM private key file")


class ServerSettings(_Section):
    listen: StrictStr = Field("127.0.0.1:8080", description="HOST:PORT to listen on")
    public_url: StrictStr | None = Field(
        None, description="URL users see, if a proxy sits in front (printed at start)"
    )
    threads: StrictInt = Field(16, ge=1, le=1024, description="worker threads")
    request_timeout: StrictInt = Field(
        60, ge=1, le=3600, description="seconds a connection may stay silent mid-request"
    )
    max_header_size: ByteSize = Field(ByteSize(65536), description="largest request header block")
    shutdown_timeout: StrictInt = Field(
        5, ge=0, le=600, description="seconds to finish requests at stop"
    )
    tls: TlsSettings | None = Field(None, description="serve HTTPS with this certificate")
    trusted_proxies: list[StrictStr] = Field(
        default_factory=list,
        description="addresses (CIDR) of reverse proxies whose X-Forwarded-For is believed",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or network (CIDR)") from None
        return value


class DatabaseSettings(_Section):
    url: StrictStr | None = Field(
        None, description="SQLAlchemy URL; default: SQLite file davbox.db in the data directory"
    )


class EncryptionSettings(_Section):
    """Encryption at rest (``davbox.encryption``): every stored file sealed with its own key."""

    master_key: SecretStr = Field(
        description=(
            "the master key, 64 hexadecimal digits from davbox keys generate;"
            " give it as {$file: PATH} or {$env: NAME}, never in this file"
        )
    )

    @field_validator("master_key")
    @classmethod
    def _sixty_four_hex_digits(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        if len(text) != 64 or any(ch not in string.hexdigits for ch in text):
            raise ValueError(
                "must be 64 hexadecimal digits (as made by davbox keys generate);"
                f" it has {len(text)} characters"
            )
        return value


class StorageSettings(_Section):
    path: StrictStr | None = Field(
        None, description="folder holding the mailboxes; default: storage/ in the data directory"
    )
    block_size: ByteSize = Field(
        ByteSize(1024 * 1024), description="read/write block size for transfers"
    )
    encryption: EncryptionSettings | None = Field(
        None, description="store every file encrypted (see README: Encryption at rest)"
    )


class SqlProviderSettings(_Section):
    type: Literal["sql"] = Field(description="accounts in davbox's own database")


class LdapProviderSettings(_Section):
    """An LDAP directory (``davbox.providers.identity.ldap``); secrets may use $env/$file."""

    type: Literal["ldap"] = Field(description="accounts in an LDAP directory")
    url: StrictStr = Field(description="ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
    start_tls: StrictBool = Field(False, description="upgrade ldap:// with StartTLS")
    ca_file: StrictStr | None = Field(
        None, description="PEM file of CAs to trust; default: the system's CAs"
    )
    verify_tls: StrictBool = Field(True, description="check the server's certificate and name")
    timeout: StrictInt = Field(
        5, ge=1, le=120, description="seconds to connect, and to wait for each answer"
    )
    bind_dn: StrictStr | None = Field(None, description="service account for searches")
    bind_password: SecretStr | None = Field(None, description="the service account's password")
    user_search_base: StrictStr | None = Field(
        None, description="search-then-bind: where accounts are searched"
    )
    user_filter: StrictStr = Field(
        "(&(objectClass=inetOrgPerson)(uid={username}))",
        description="search-then-bind: the filter; {username} is the escaped login name",
    )
    user_dn_template: StrictStr | None = Field(
        None, description="direct bind: the account's DN; {username} is the escaped login name"
    )
    username_attribute: StrictStr = Field(
        "uid", description="attribute whose value is the davbox account name"
    )
    group_search_base: StrictStr | None = Field(None, description="where groups are searched")
    group_filter: StrictStr = Field(
        "(&(objectClass=groupOfNames)(member={dn}))",
        description="the account's groups; {dn} and {username} are escaped",
    )
    group_attribute: StrictStr = Field("cn", description="attribute naming a group")
    group_map: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="LDAP group name: davbox group (only these are synced)"
    )
    pool_size: StrictInt = Field(
        4, ge=1, le=64, description="service connections kept open and reused"
    )
    cache_ttl: StrictInt | None = Field(
        None,
        ge=0,
        le=86400,
        description="seconds a verified LDAP login stays cached, at most auth.cache_ttl",
    )

    @model_validator(mode="after")
    def _consistent(self) -> LdapProviderSettings:
        scheme = self.url.partition("://")[0].lower()
        if scheme not in ("ldap", "ldaps") or not self.url.partition("://")[2].strip("/"):
            raise ValueError(f"url must be ldap://HOST or ldaps://HOST, got {self.url!r}")
        if self.start_tls and scheme == "ldaps":
            raise ValueError("start_tls is for ldap:// URLs; ldaps:// is TLS from the start")
        if (self.user_search_base is None) == (self.user_dn_template is None):
            raise ValueError("set exactly one of user_search_base and user_dn_template")
        if (self.bind_dn is None) != (self.bind_password is None):
            raise ValueError("bind_dn and bind_password go together")
        if self.bind_password is not None and not self.bind_password.get_secret_value():
            # An empty password makes an unauthenticated bind, which "succeeds".
            raise ValueError("bind_password is empty")
        if self.group_map and self.group_search_base is None:
            raise ValueError("group_map needs group_search_base")
        if self.group_search_base is not None and not self.group_map:
            raise ValueError("group_search_base needs group_map (only mapped groups are synced)")
        _placeholders("user_filter", self.user_filter, {"username"}, frozenset({"username"}))
        if self.user_dn_template is not None:
            _placeholders(
                "user_dn_template", self.user_dn_template, {"username"}, frozenset({"username"})
            )
        _placeholders("group_filter", self.group_filter, {"dn", "username"})
        if self.ca_file is not None and not os.access(self.ca_file, os.R_OK):
            raise ValueError(f"cannot read ca_file {self.ca_file}")
        return self


def _placeholders(
    key: str, text: str, allowed: set[str], required: frozenset[str] = frozenset()
) -> None:
    """Refuse unknown ``{names}`` in a filter or template, and missing required ones."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    unknown = names - allowed
    if unknown:
        raise ValueError(
            f"{key}: unknown placeholder {{{sorted(unknown)[0]}}}"
            f" (known: {', '.join('{' + n + '}' for n in sorted(allowed))})"
        )
    missing = required - names
    if missing:
        raise ValueError(f"{key} must contain {{{sorted(missing)[0]}}}")


def _provider_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return {"sql": "SqlProviderSettings", "ldap": "LdapProviderSettings"}.get(str(kind))


# Tags are the class names, so error locations read "auth.providers[0].url".
ProviderSettings = Annotated[
    Annotated[SqlProviderSettings, Tag("SqlProviderSettings")]
    | Annotated[LdapProviderSettings, Tag("LdapProviderSettings")],
    Discriminator(
        _provider_kind,
        custom_error_type="provider_type",
        custom_error_message="each provider needs type: sql or type: ldap",
    ),
]


def _sql_only() -> list[SqlProviderSettings | LdapProviderSettings]:
    return [SqlProviderSettings(type="sql")]


class AuthSettings(_Section):
    realm: StrictStr = Field("davbox", description="realm shown in the Basic login prompt")
    providers: list[ProviderSettings] = Field(
        default_factory=_sql_only,
        min_length=1,
        description="identity providers asked in order; the first that verifies wins",
    )
    cache_ttl: StrictInt = Field(
        300, ge=0, le=86400, description="seconds a verified password stays cached (0: off)"
    )
    refresh_interval: StrictFloat = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="seconds between checks for account and membership changes",
    )
    two_factor_for: list[StrictStr] = Field(
        default_factory=lambda: ["*"],
        description="accounts under two-factor login: *, @group, mailbox:NAME or a name",
    )
    basic_password_code: StrictBool = Field(
        False,
        description="let 2FA accounts send password+code over Basic auth (weaker; see README)",
    )
    basic_code_idle: StrictInt = Field(
        600, ge=30, le=28800, description="seconds a password+code credential stays usable unused"
    )
    throttle_account_failures: StrictInt = Field(
        10, ge=1, le=10000, description="failed logins per account before logins slow down"
    )
    throttle_address_failures: StrictInt = Field(
        50, ge=1, le=100000, description="failed logins per client address before it slows down"
    )
    throttle_window: StrictInt = Field(
        900, ge=1, le=86400, description="seconds over which failed logins are counted"
    )
    throttle_max_delay: StrictInt = Field(
        900, ge=1, le=86400, description="longest wait (seconds) imposed after failures"
    )


class RegistrationSettings(_Section):
    """Self-registration at ``/register`` (``davbox.registration``): off unless switched on."""

    enabled: StrictBool = Field(
        False, description="people with an address in allowed_domains may make an account"
    )
    allowed_domains: list[StrictStr] = Field(
        default_factory=list,
        description="mail domains that may register (exact; *.example.org: its subdomains)",
    )
    link_lifetime: StrictInt = Field(
        86400, ge=60, le=604800, description="seconds the mailed verification link works"
    )
    requests_per_address: StrictInt = Field(
        3, ge=1, le=1000, description="registration mails per address within throttle_window"
    )
    requests_per_client: StrictInt = Field(
        20, ge=1, le=100000, description="registrations per client address within throttle_window"
    )
    throttle_window: StrictInt = Field(
        3600, ge=60, le=604800, description="seconds over which registrations are counted"
    )
    grants: dict[StrictStr, Literal["manager", "member", "reader", "dropper"]] = Field(
        default_factory=dict, description="MAILBOX: role given to every new registered account"
    )

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        cleaned = []
        for entry in value:
            domain = entry.strip().lower()
            bare = domain.removeprefix("*.")
            labels = bare.split(".")
            if len(labels) < 2 or not all(
                label and set(label) <= _DOMAIN_CHARS and not label.startswith("-")
                for label in labels
            ):
                raise ValueError(f"{entry!r} is not a mail domain (example.org, or *.example.org)")
            cleaned.append(domain)
        return cleaned

    @model_validator(mode="after")
    def _consistent(self) -> RegistrationSettings:
        if self.enabled and not self.allowed_domains:
            raise ValueError("enabled: true needs allowed_domains")
        return self


_DOMAIN_CHARS = set(string.ascii_lowercase + string.digits + "-")


class WebSettings(_Section):
    session_idle_timeout: StrictInt = Field(
        1800, ge=60, le=86400, description="seconds a browser session may stay unused"
    )
    session_max_age: StrictInt = Field(
        43200, ge=300, le=604800, description="seconds after login a browser session always ends"
    )
    login_step_timeout: StrictInt = Field(
        300, ge=30, le=3600, description="seconds to enter the code after the password"
    )
    registration: RegistrationSettings = Field(
        default_factory=RegistrationSettings,  # type: ignore[arg-type]
        description="self-registration limited to mail domains",
    )


class LinkSettings(_Section):
    members_may_share: StrictBool = Field(
        False, description="members (not only managers) may make share links"
    )


class MailSettings(_Section):
    """Outgoing mail (``davbox.mail``): notifications and messages, sent from a queue."""

    enabled: StrictBool | None = Field(
        None, description="send mail and notifications; null: on when host is set"
    )
    host: StrictStr | None = Field(None, description="SMTP server to hand mails to")
    port: StrictInt | None = Field(
        None, ge=1, le=65535, description="SMTP port; null: 25, 587 (starttls) or 465 (tls)"
    )
    security: Literal["none", "starttls", "tls"] = Field(
        "starttls", description="none, starttls (upgrade after connecting) or tls (from the start)"
    )
    verify_tls: StrictBool = Field(True, description="check the SMTP server's certificate")
    ca_file: StrictStr | None = Field(
        None, description="PEM file of CAs to trust; default: the system's CAs"
    )
    username: StrictStr | None = Field(None, description="SMTP login name")
    password: SecretStr | None = Field(None, description="SMTP password (use $env or $file)")
    from_address: StrictStr = Field(
        "davbox@localhost", description="sender address (From) of every mail"
    )
    timeout: StrictInt = Field(
        30, ge=1, le=600, description="seconds to connect, and to wait for each answer"
    )
    language: Literal["nl", "en"] = Field(
        "nl", description="language of mails to accounts that chose none"
    )
    poll_interval: StrictFloat = Field(
        5.0, ge=0.1, le=3600.0, description="seconds between looks at the queue"
    )
    retry_delay: StrictInt = Field(
        60, ge=1, le=86400, description="seconds before the first retry (doubling after)"
    )
    retry_max_delay: StrictInt = Field(
        3600, ge=1, le=86400, description="longest wait between two tries of a mail"
    )
    give_up_after: StrictInt = Field(
        259200, ge=60, le=2592000, description="seconds of failed tries before a mail is dropped"
    )
    daily_digest_at: StrictStr = Field(
        "07:00", description="HH:MM (UTC) when daily digests are sent"
    )

    @property
    def active(self) -> bool:
        """Whether the sender runs: ``enabled``, or by default whether a host is set."""
        return self.host is not None if self.enabled is None else self.enabled

    @property
    def smtp_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"none": 25, "starttls": 587, "tls": 465}[self.security]

    @field_validator("daily_digest_at")
    @classmethod
    def _clock(cls, value: str) -> str:
        hour, sep, minute = value.partition(":")
        if not (sep and hour.isdigit() and minute.isdigit() and len(minute) == 2):
            raise ValueError(f"expected HH:MM, got {value!r}")
        if int(hour) > 23 or int(minute) > 59:
            raise ValueError(f"{value!r} is not a time of day")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MailSettings:
        if self.enabled and self.host is None:
            raise ValueError("enabled: true needs a host")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if "@" not in self.from_address:
            raise ValueError(f"from_address {self.from_address!r} is not a mail address")
        if self.retry_max_delay < self.retry_delay:
            raise ValueError("retry_max_delay must not be below retry_delay")
        if self.ca_file is not None and not os.access(self.ca_file, os.R_OK):
            raise ValueError(f"cannot read ca_file {self.ca_file}")
        return self


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    access_log: StrictBool = Field(True, description="one line per request (never credentials)")


class TransferSettings(_Section):
    """SecureTransfer (``davbox send`` / ``davbox request``): links by mail, codes for externals."""

    expires: StrictStr = Field("5d", description="how long sent and requested links live")
    upload_window: StrictStr | None = Field(
        None, description="default upload window of a request link (e.g. 1h); null: its life"
    )
    require_code: StrictBool = Field(
        True, description="a sent link asks for a one-time code first (--no-code to skip)"
    )
    code_ttl: StrictInt = Field(600, ge=60, le=86400, description="seconds a code stays valid")
    webhook_url: StrictStr | None = Field(
        None, description="https URL of an SMS gateway: codes to phone numbers go there"
    )
    webhook_token: SecretStr | None = Field(
        None, description="bearer token for the gateway (use $env or $file)"
    )
    webhook_text: StrictStr = Field(
        "{code}", description="the text the gateway sends; {code} is replaced by the code"
    )

    @field_validator("expires", "upload_window")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not is_duration(value):
            raise ValueError(f"cannot read {value!r} as a duration; use e.g. 1h, 5d or 2w")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("webhook_text")
    @classmethod
    def _text(cls, value: str) -> str:
        if "{code}" not in value:
            raise ValueError("the text must contain {code}")
        return value


class ExpirySettings(_Section):
    """The expiry job (``davbox.expiry``): deletes files whose ``retention`` ran out."""

    enabled: StrictBool = Field(True, description="run the expiry job in the server")
    interval: StrictInt = Field(
        300, ge=5, le=86400, description="seconds between two runs of the expiry job"
    )


class AuditSettings(_Section):
    """The audit trail (``davbox.audit``)."""

    keep_days: StrictInt | None = Field(
        None,
        ge=AUDIT_FLOOR_DAYS,
        description=f"days audit records are kept (at least {AUDIT_FLOOR_DAYS}); null: forever",
    )


class Settings(_Section):
    """The whole file. ``policies`` is a list of rules checked by ``davbox.policies.registry``."""

    server: ServerSettings = Field(default_factory=ServerSettings)  # type: ignore[arg-type]
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)  # type: ignore[arg-type]
    storage: StorageSettings = Field(default_factory=StorageSettings)  # type: ignore[arg-type]
    auth: AuthSettings = Field(default_factory=AuthSettings)  # type: ignore[arg-type]
    web: WebSettings = Field(default_factory=WebSettings)  # type: ignore[arg-type]
    links: LinkSettings = Field(default_factory=LinkSettings)  # type: ignore[arg-type]
    mail: MailSettings = Field(default_factory=MailSettings)  # type: ignore[arg-type]
    transfer: TransferSettings = Field(default_factory=TransferSettings)  # type: ignore[arg-type]
    expiry: ExpirySettings = Field(default_factory=ExpirySettings)  # type: ignore[arg-type]
    audit: AuditSettings = Field(default_factory=AuditSettings)  # type: ignore[arg-type]
    logging: LoggingSettings = Field(default_factory=LoggingSettings)  # type: ignore[arg-type]
    policies: list[Any] = Field(
        default_factory=list, description="access and limit rules (see policies/)"
    )

    @model_validator(mode="after")
    def _registration_mails(self) -> Settings:
        if self.web.registration.enabled and not self.mail.active:
            raise ValueError("web.registration needs mail: set mail.host")
        return self


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:8080``); raise ValueError with a readable text."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return host.strip("[]"), port
