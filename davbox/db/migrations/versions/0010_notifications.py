"""Notifications: subscriptions, digest items, sensitive mailboxes, link notices, mail language.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 11:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=8), nullable=True))
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("sensitive", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("share_links", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("notify_uploads", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("notify_downloads", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "notify_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("every", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "mailbox_id", "event", name="uq_subscription"),
    )
    op.create_table(
        "notify_digest_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("every", sa.String(length=16), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("mailbox", sa.String(length=128), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_digest_item_user", "notify_digest_items", ["user_id", "every"])


def downgrade() -> None:
    op.drop_index("ix_digest_item_user", table_name="notify_digest_items")
    op.drop_table("notify_digest_items")
    op.drop_table("notify_subscriptions")
    with op.batch_alter_table("share_links", schema=None) as batch_op:
        batch_op.drop_column("notify_downloads")
        batch_op.drop_column("notify_uploads")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("sensitive")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("language")
