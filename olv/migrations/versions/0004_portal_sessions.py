"""State portal browser sessions and the last TOTP step used per person.

Written by hand to match ``portal/sessions.py``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "portal_session",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_portal_session_user_id_users"),
            nullable=False,
        ),
        sa.Column("stage", sa.String(10), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("last_seen_at", Stamp, nullable=False),
        sa.Column("enrol_secret", sa.String(64)),
        sa.PrimaryKeyConstraint("token_hash", name="pk_portal_session"),
    )
    op.create_index("ix_portal_session_user_id", "portal_session", ["user_id"])
    op.create_table(
        "portal_totp_step",
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_portal_totp_step_user_id_users"),
            nullable=False,
        ),
        sa.Column(
            "last_step", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_portal_totp_step"),
    )


def downgrade() -> None:
    op.drop_table("portal_totp_step")
    op.drop_index("ix_portal_session_user_id", "portal_session")
    op.drop_table("portal_session")
