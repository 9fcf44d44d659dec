"""Each audit write leaves its id, so that a write whose commit went unanswered is not
written twice.

The audit writer sends a batch and commits; when the answer to the commit never comes (the
server hung or died, a failover), the batch may or may not be in the table. Writing it again
could leave each of its rows twice, dropping it could lose them. The batch's id is now
written in the same transaction, and before writing such a batch again the writer looks for
its id. The table holds a writer's last few ids only: each write deletes the one before it,
and any older than a day.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_write",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("audit_write")
