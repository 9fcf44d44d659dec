"""The compliance report reads the insurer calls from one index alone.

The index by NAIC and time also holds the outcome and the latency, so that the per-day counts
and percentiles never look up the table's rows (on a large log those lookups were most of a
report's time). It replaces the index by NAIC and time, which it serves as well.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_insurer_calls_report", "insurer_calls", ["naic", "at", "outcome", "latency_ms"]
    )
    op.drop_index("ix_insurer_calls_naic_at", table_name="insurer_calls")


def downgrade() -> None:
    op.create_index("ix_insurer_calls_naic_at", "insurer_calls", ["naic", "at"])
    op.drop_index("ix_insurer_calls_report", table_name="insurer_calls")
