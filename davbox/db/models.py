"""SQLAlchemy 2 models: accounts, groups, mailboxes, memberships, DAV state.

Contract: the schema is created and changed only by the Alembic migrations in
``davbox/db/migrations``; a test checks that models and migrations agree.
Names (users, groups, mailboxes) are unique and compared exactly.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Role(enum.StrEnum):
    """A member's role in a mailbox; see ``davbox.access`` for what each may do."""

    MANAGER = "manager"
    MEMBER = "member"
    READER = "reader"
    DROPPER = "dropper"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Who checks the password: "local" (password_hash, the sql provider) or
    # "ldap" (the directory; no usable hash is kept, so only LDAP verifies it).
    source: Mapped[str] = mapped_column(String(16), default="local", server_default="local")
    # TOTP secret, encrypted with the installation's key (davbox.twofactor).
    totp_secret: Mapped[str | None] = mapped_column(String(256))
    # The last TOTP time step accepted: a code is accepted once.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    # Language of mails to this account ("nl", "en"); None: mail.language.
    language: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    groups: Mapped[list[Group]] = relationship(
        secondary="group_members", back_populates="members", order_by="Group.name"
    )


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    members: Mapped[list[User]] = relationship(
        secondary="group_members", back_populates="groups", order_by="User.name"
    )


class GroupMember(Base):
    __tablename__ = "group_members"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


class Mailbox(Base):
    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(String(1024), default="")
    # Folder name under the storage root: random, so a re-created mailbox of
    # the same name never sees an old folder.
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    # Sensitive: notifications name no files, only counts and a link to log in.
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    grants: Mapped[list[MailboxGrant]] = relationship(
        back_populates="mailbox", cascade="all, delete-orphan", passive_deletes=True
    )


class MailboxGrant(Base):
    """A user's or a group's role in a mailbox (exactly one of the two is set)."""

    __tablename__ = "mailbox_grants"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "user_id", name="uq_grant_user"),
        UniqueConstraint("mailbox_id", "group_id", name="uq_grant_group"),
        CheckConstraint("(user_id IS NULL) <> (group_id IS NULL)", name="ck_grant_one_principal"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )

    mailbox: Mapped[Mailbox] = relationship(back_populates="grants")
    user: Mapped[User | None] = relationship()
    group: Mapped[Group | None] = relationship()


class DeadProperty(Base):
    """A WebDAV dead property, keyed by the resource's canonical path."""

    __tablename__ = "dav_properties"
    __table_args__ = (
        UniqueConstraint("path", "name", name="uq_property"),
        Index("ix_property_parent", "parent"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(4096))
    parent: Mapped[str] = mapped_column(String(4096))
    name: Mapped[str] = mapped_column(String(1024))
    value: Mapped[bytes] = mapped_column(LargeBinary)


class DavLock(Base):
    """A WebDAV lock as WsgiDAV's lock manager describes it."""

    __tablename__ = "dav_locks"
    __table_args__ = (Index("ix_lock_root", "root"),)

    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    root: Mapped[str] = mapped_column(String(4096))
    principal: Mapped[str] = mapped_column(String(256))
    scope: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(16))
    depth: Mapped[str] = mapped_column(String(16))
    owner: Mapped[bytes] = mapped_column(LargeBinary)
    timeout: Mapped[float] = mapped_column(Float)
    expire: Mapped[float] = mapped_column(Float)


class AppPassword(Base):
    """A password for one WebDAV client, made after a full login; stored as an HMAC only.

    ``mailboxes`` is a newline-separated list limiting which mailboxes it
    reaches ("" means all of the account's); ``read_only`` limits it to reading.
    """

    __tablename__ = "app_passwords"
    __table_args__ = (UniqueConstraint("user_id", "label", name="uq_app_password_label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    mailboxes: Mapped[str] = mapped_column(Text, default="")
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_from: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User] = relationship()


class RecoveryCode(Base):
    """A single-use recovery code for two-factor login, stored as an HMAC."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuthFailure(Base):
    """One failed login for a key (``account:<name>`` or ``address:<ip>``), for throttling."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failure_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(320))
    at: Mapped[float] = mapped_column(Float)


class ShareLink(Base):
    """A link to a folder or file of a mailbox for people without an account (davbox.links).

    Only a SHA-256 digest of the token is used to find a link; ``token_sealed``
    keeps the token encrypted so its creator can copy the URL again.
    ``path`` is inside the mailbox ("/" for all of it). Times are UTC.
    """

    __tablename__ = "share_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    token_sealed: Mapped[str] = mapped_column(String(256))
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(4096))
    is_folder: Mapped[bool] = mapped_column(Boolean)
    permission: Mapped[str] = mapped_column(String(8))
    password_hash: Mapped[str | None] = mapped_column(String(256))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    label: Mapped[str] = mapped_column(String(256), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    # SecureTransfer (davbox.transfer): the external person the link was sent
    # to or asked of, and how a one-time code reaches them before they may use
    # it ("" none, "mail" to ``recipient``, "webhook" to ``code_to``, a phone).
    recipient: Mapped[str | None] = mapped_column(String(320))
    code_channel: Mapped[str] = mapped_column(String(16), default="", server_default="")
    code_to: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    upload_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_downloads: Mapped[int | None] = mapped_column(Integer)
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Mail the creator about each file dropped / fetched through the link.
    notify_uploads: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    notify_downloads: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    mailbox: Mapped[Mailbox] = relationship()


class WebSession(Base):
    """A browser session (davbox.sessions): only a digest of its cookie is stored.

    ``stage`` is how far the login got: "password" (code still due), "enroll"
    (must set up two-factor login first) or "full". Times are UNIX seconds.
    ``pending_totp`` holds a TOTP secret being set up, encrypted, until confirmed.
    """

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    pending_totp: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(256), default="")


class Setting(Base):
    """Server-wide state kept in the database (secrets, change counters)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AuditRecord(Base):
    """One sealed audit record (davbox.audit): append-only, chained by HMAC.

    ``record`` is the canonical JSON of the whole event; the other columns are
    copies of some of its fields for querying (``audit verify`` checks that
    they agree with it). ``hash`` seals (seq, prev_hash, record).
    """

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    request_id: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(320), index=True)
    mailbox: Mapped[str] = mapped_column(String(128), index=True)
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[int | None] = mapped_column(Integer)
    record: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The end of the audit chain (one row, id 1): the last record's number and hash.

    Every append updates it in the record's transaction, which serializes
    appends (a row lock on PostgreSQL, the write lock on SQLite) and lets
    ``audit verify`` notice records removed from the end.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    # Where the chain starts after older records were trimmed (davbox.audit.trim):
    # the last removed record's number and hash, sealed so only the server can move it.
    anchor_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    anchor_hash: Mapped[str | None] = mapped_column(String(64))
    anchor_seal: Mapped[str | None] = mapped_column(String(64))


class OutboxMail(Base):
    """A mail waiting to be sent, being sent, sent or given up (davbox.mail.outbox).

    Rendered when queued; ``text``/``html`` are emptied once sent (they may
    carry a recipient's link). Times are UNIX seconds. ``claim`` and
    ``lease_until`` mark a sender that took the mail: another takes it only
    after the lease has run out. ``dedupe_key`` (unique when set) lets callers
    queue a mail at most once per key across processes.
    """

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255))
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float)
    claim: Mapped[str | None] = mapped_column(String(32))
    sent_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str] = mapped_column(Text, default="")


class Subscription(Base):
    """A user's wish to be told about files in a mailbox (davbox.notify).

    ``event``: "placed" (a new file) or "fetched" (a file the user placed
    was downloaded); ``every``: "immediate", "hourly" or "daily" (a digest).
    """

    __tablename__ = "notify_subscriptions"
    __table_args__ = (UniqueConstraint("user_id", "mailbox_id", "event", name="uq_subscription"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(16))
    every: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)


class DigestItem(Base):
    """One happening waiting for a user's next hourly or daily digest mail (davbox.notify)."""

    __tablename__ = "notify_digest_items"
    __table_args__ = (Index("ix_digest_item_user", "user_id", "every"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    every: Mapped[str] = mapped_column(String(16))
    event: Mapped[str] = mapped_column(String(16))
    mailbox: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(320))
    sensitive: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[float] = mapped_column(Float)


class LinkCode(Base):
    """A one-time code sent to a link's recipient (davbox.codes): only its HMAC is kept."""

    __tablename__ = "link_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    link_id: Mapped[int] = mapped_column(
        ForeignKey("share_links.id", ondelete="CASCADE"), index=True
    )
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class FileRecord(Base):
    """When a file was placed, as the server saw it (davbox.file_index): retention counts
    from ``uploaded_at``, never from file times a client can set.

    ``claimed_until``: an expiry run is deleting it (davbox.expiry); others wait.
    """

    __tablename__ = "file_records"
    __table_args__ = (UniqueConstraint("mailbox_id", "path", name="uq_file_record"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(4096))
    uploaded_at: Mapped[float] = mapped_column(Float)
    uploaded_by: Mapped[str] = mapped_column(String(320), default="")
    claimed_until: Mapped[float | None] = mapped_column(Float)
    # The uploader's own end of availability (the {urn:davbox}available-until
    # property, davbox expiry set): deleted then, or sooner by a retention rule.
    available_until: Mapped[float | None] = mapped_column(Float)


class Registration(Base):
    """A self-registration request (davbox.registration): only its link's SHA-256 is kept.

    ``state`` "pending" (a link was mailed), "notice" (the address had an
    account: a notice was mailed instead), "used", "replaced" (by a newer
    request for the address) or "expired". The argon2 hash of the chosen password is kept
    only while pending. Rows also count requests for throttling.
    """

    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    digest: Mapped[str | None] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    password_hash: Mapped[str | None] = mapped_column(String(256))
    language: Mapped[str] = mapped_column(String(8), default="en")
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float, index=True)
    expires_at: Mapped[float] = mapped_column(Float)


class JobRun(Base):
    """A scheduled job's lease (davbox.jobs): who may run it until when, across processes."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    held_until: Mapped[float | None] = mapped_column(Float)


class EncryptionKey(Base):
    """A key-encryption key (davbox.keys), wrapped by the master key; ``wrapped`` is
    None once it is retired (no file uses it any more, so it is destroyed)."""

    __tablename__ = "encryption_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FileId(Base):
    """A stable id per file and folder path (davbox.compat.fileids): ownCloud's
    ``oc:fileid``. It stays across overwrites and moves; a copy gets a new one."""

    __tablename__ = "file_ids"
    __table_args__ = (UniqueConstraint("mailbox_id", "path", name="uq_file_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(4096))
    # "SHA1:<hex> MD5:<hex>" of the content as uploaded (oc:checksums), valid while
    # the file's stamp (inode, time, size) is ``stamp``: a change on disk voids it.
    checksums: Mapped[str | None] = mapped_column(String(256))
    stamp: Mapped[str | None] = mapped_column(String(64))


class LoginFlow(Base):
    """A Nextcloud Login Flow v2 in progress (davbox.compat.loginflow): tokens kept as
    SHA-256 digests only; ``granted_to`` once the account's owner allowed it."""

    __tablename__ = "login_flows"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login_digest: Mapped[str] = mapped_column(String(64), unique=True)
    poll_digest: Mapped[str] = mapped_column(String(64), unique=True)
    client: Mapped[str] = mapped_column(String(256), default="")
    expires_at: Mapped[float] = mapped_column(Float)
    granted_to: Mapped[str | None] = mapped_column(String(128))
