"""Nextcloud Login Flow v2: sync clients get an app password through a browser login.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-23 19:55:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_flows",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login_digest", sa.String(length=64), nullable=False),
        sa.Column("poll_digest", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=256), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("granted_to", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("login_digest"),
        sa.UniqueConstraint("poll_digest"),
    )


def downgrade() -> None:
    op.drop_table("login_flows")
