"""The NAIC of the record each book-of-business problem was found on.

An insurer liaison sees the problems of a file only on lines of their own NAIC: a file may
carry several insurers' records (SPEC §2), and another insurer's VINs are not theirs to see.
Problems recorded before this column existed have none and are shown to administrators only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bob_issue") as batch:
        batch.add_column(sa.Column("naic", sa.String(5), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bob_issue") as batch:
        batch.drop_column("naic")
