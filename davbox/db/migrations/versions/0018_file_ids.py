"""Stable file ids for sync clients (oc:fileid): per mailbox and path.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-23 19:45:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "file_ids",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=4096), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id", "path", name="uq_file_id"),
    )


def downgrade() -> None:
    op.drop_table("file_ids")
