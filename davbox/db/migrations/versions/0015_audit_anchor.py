"""Audit trail: an anchor where the chain starts after old records were trimmed.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-23 17:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("anchor_seq", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("anchor_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("anchor_seal", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("anchor_seal")
        batch_op.drop_column("anchor_hash")
        batch_op.drop_column("anchor_seq")
