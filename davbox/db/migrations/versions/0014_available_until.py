"""Expiry: an uploader's own end of availability for a file.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-23 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("file_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("available_until", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("file_records", schema=None) as batch_op:
        batch_op.drop_column("available_until")
