"""Insurer policy store and SOAP audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("policy_number", sa.String(50), nullable=False),
        sa.Column("policy_key", sa.String(50), nullable=False),
        sa.Column("policy_type", sa.String(2), nullable=False),
        sa.Column("pending_review", sa.Boolean, nullable=False),
        sa.UniqueConstraint("naic", "policy_key", name="uq_policy_naic"),
    )
    op.create_index("ix_policy_naic", "policy", ["naic"])
    op.create_table(
        "coverage",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "policy_id",
            sa.Integer,
            sa.ForeignKey("policy.id", ondelete="CASCADE", name="fk_coverage_policy_id_policy"),
            nullable=False,
        ),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("vin", sa.String(25)),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("expiration_date", sa.Date),
        sa.Column("cancel_date", sa.Date),
    )
    op.create_index("ix_coverage_policy_id", "coverage", ["policy_id"])
    op.create_index("ix_coverage_naic_vin", "coverage", ["naic", "vin"])
    op.create_table(
        "audit_record",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requester", sa.String(300), nullable=False),
        sa.Column("version", sa.String(8), nullable=False),
        sa.Column("naic", sa.String(50)),
        sa.Column("policy_key", sa.String(50)),
        sa.Column("vin", sa.String(50)),
        sa.Column("verification_date", sa.String(40)),
        sa.Column("request_reason", sa.String(40)),
        sa.Column("response_code", sa.String(11), nullable=False),
        sa.Column("reason_codes", sa.String(40), nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )
    op.create_index("ix_audit_record_at", "audit_record", ["at"])
    op.create_index("ix_audit_record_vin_at", "audit_record", ["vin", "at"])


def downgrade() -> None:
    op.drop_table("audit_record")
    op.drop_table("coverage")
    op.drop_table("policy")
