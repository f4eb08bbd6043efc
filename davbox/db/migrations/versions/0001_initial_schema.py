"""Initial schema: accounts, groups, mailboxes, grants, DAV properties and locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 10:23:00.605721
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "dav_locks",
        sa.Column("token", sa.String(length=128), nullable=False),
        sa.Column("root", sa.String(length=4096), nullable=False),
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("depth", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.LargeBinary(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("expire", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("token"),
    )
    with op.batch_alter_table("dav_locks", schema=None) as batch_op:
        batch_op.create_index("ix_lock_root", ["root"], unique=False)

    op.create_table(
        "dav_properties",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.Column("parent", sa.String(length=4096), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("path", "name", name="uq_property"),
    )
    with op.batch_alter_table("dav_properties", schema=None) as batch_op:
        batch_op.create_index("ix_property_parent", ["parent"], unique=False)

    op.create_table(
        "groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("storage_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("storage_key"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("display_name", sa.String(length=256), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "user_id"),
    )
    op.create_table(
        "mailbox_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column(
            "role",
            sa.Enum(
                "manager", "member", "reader", "dropper", name="role", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (group_id IS NULL)", name="ck_grant_one_principal"
        ),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id", "group_id", name="uq_grant_group"),
        sa.UniqueConstraint("mailbox_id", "user_id", name="uq_grant_user"),
    )


def downgrade() -> None:

    op.drop_table("mailbox_grants")
    op.drop_table("group_members")
    op.drop_table("users")
    op.drop_table("settings")
    op.drop_table("mailboxes")
    op.drop_table("groups")
    with op.batch_alter_table("dav_properties", schema=None) as batch_op:
        batch_op.drop_index("ix_property_parent")

    op.drop_table("dav_properties")
    with op.batch_alter_table("dav_locks", schema=None) as batch_op:
        batch_op.drop_index("ix_lock_root")

    op.drop_table("dav_locks")
