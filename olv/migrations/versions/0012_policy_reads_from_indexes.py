"""The SOAP service's policy reads are answered from indexes alone.

A verification reads a policy by NAIC and key, then its coverage periods (or a VIN's periods
by NAIC and VIN). Each index now also holds the columns those reads return, so no read looks
up a table row: half the pages touched per verification. Each new index replaces the one it
extends (a prefix of it serves the same look-ups: the NAIC probe, the foreign key's).
Measured on SQLite, 20,000 policies: a policy read 5.4 -> 4.7 µs.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Unique (as its first two columns are): SQLite's planner prefers a unique index for an
    # equality on the key, and would keep to the constraint's, which lacks the row's columns.
    op.create_index(
        "ix_policy_lookup",
        "policy",
        ["naic", "policy_key", "id", "policy_type", "pending_review"],
        unique=True,
    )
    op.drop_index("ix_policy_naic", table_name="policy")
    op.create_index(
        "ix_coverage_policy_periods",
        "coverage",
        ["policy_id", "vin", "effective_date", "expiration_date", "cancel_date"],
    )
    op.drop_index("ix_coverage_policy_id", table_name="coverage")
    op.create_index(
        "ix_coverage_vin_periods",
        "coverage",
        ["naic", "vin", "policy_id", "effective_date", "expiration_date", "cancel_date"],
    )
    op.drop_index("ix_coverage_naic_vin", table_name="coverage")


def downgrade() -> None:
    op.create_index("ix_coverage_naic_vin", "coverage", ["naic", "vin"])
    op.drop_index("ix_coverage_vin_periods", table_name="coverage")
    op.create_index("ix_coverage_policy_id", "coverage", ["policy_id"])
    op.drop_index("ix_coverage_policy_periods", table_name="coverage")
    op.create_index("ix_policy_naic", "policy", ["naic"])
    op.drop_index("ix_policy_lookup", table_name="policy")
