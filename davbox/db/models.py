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
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    upload_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    max_downloads: Mapped[int | None] = mapped_column(Integer)
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

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
