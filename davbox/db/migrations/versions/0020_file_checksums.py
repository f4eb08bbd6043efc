"""Checksums of uploaded files for sync clients (oc:checksums), kept with their file ids.

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-23 20:25:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("file_ids") as batch:
        batch.add_column(sa.Column("checksums", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("stamp", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("file_ids") as batch:
        batch.drop_column("stamp")
        batch.drop_column("checksums")
