"""State portal: insurer registry, registrations, users, API tokens, query/security/call logs.

Written by hand to match ``portal/models.py``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "insurers",
        sa.Column("naic", sa.String(5), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("version", sa.String(8), nullable=False),
        sa.Column("accepts_unknown", sa.Boolean, nullable=False),
        sa.Column("client_cert", sa.String(500)),
        sa.Column("client_key", sa.String(500)),
        sa.Column("ca_bundle", sa.String(500)),
        sa.Column("timeout_seconds", sa.Float),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
    )
    op.create_table(
        "registrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("plate", sa.String(12), nullable=False),
        sa.Column("state", sa.String(2), nullable=False),
        sa.Column("vin", sa.String(25), nullable=False),
        sa.UniqueConstraint("plate", "state", name="uq_registrations_plate"),
    )
    op.create_index("ix_registrations_vin", "registrations", ["vin"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("naic", sa.String(5)),
        sa.Column("totp_secret", sa.String(64)),
        sa.Column("totp_enrolled", sa.Boolean, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False),
        sa.Column("first_failed_at", Stamp),
        sa.Column("locked_at", Stamp),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("last_login_at", Stamp),
        sa.UniqueConstraint("username", name="uq_users_username"),
        sa.CheckConstraint(
            "role IN ('officer', 'court', 'dmv', 'insurer', 'admin')", name="ck_users_role"
        ),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_api_tokens_user_id_users"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("expires_at", Stamp),
        sa.Column("revoked_at", Stamp),
        sa.Column("last_used_at", Stamp),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])
    op.create_table(
        "query_log",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("role", sa.String(10), nullable=False),
        sa.Column("channel", sa.String(5), nullable=False),
        sa.Column("vin", sa.String(25)),
        sa.Column("plate", sa.String(12)),
        sa.Column("plate_state", sa.String(2)),
        sa.Column("naic", sa.String(5)),
        sa.Column("policy_number", sa.String(50)),
        sa.Column("verification_date", sa.Date),
        sa.Column("reason", sa.String(6)),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("status", sa.String(11)),
        sa.Column("verdict", sa.String(16)),
        sa.Column("reason_codes", sa.String(60), nullable=False),
        sa.Column("answered_naic", sa.String(5)),
        sa.Column("insurer", sa.String(200)),
        sa.Column("answered_policy_number", sa.String(50)),
        sa.Column("source", sa.String(16)),
        sa.Column("error", sa.String(200)),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )
    op.create_index("ix_query_log_at", "query_log", ["at"])
    op.create_index("ix_query_log_username_at", "query_log", ["username", "at"])
    op.create_index("ix_query_log_vin_at", "query_log", ["vin", "at"])
    op.create_table(
        "security_log",
        sa.Column("id", RowId, primary_key=True),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("username", sa.String(100)),
        sa.Column("detail", sa.String(500), nullable=False),
        sa.Column("source", sa.String(64)),
    )
    op.create_index("ix_security_log_at", "security_log", ["at"])
    op.create_index("ix_security_log_username_at", "security_log", ["username", "at"])
    op.create_table(
        "insurer_calls",
        sa.Column("id", RowId, primary_key=True),
        sa.Column("at", Stamp, nullable=False),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("outcome", sa.String(12), nullable=False),
        sa.Column("response_code", sa.String(11)),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("query_id", sa.String(32)),
    )
    op.create_index("ix_insurer_calls_naic_at", "insurer_calls", ["naic", "at"])
    op.create_index("ix_insurer_calls_at", "insurer_calls", ["at"])


def downgrade() -> None:
    op.drop_table("insurer_calls")
    op.drop_table("security_log")
    op.drop_table("query_log")
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("registrations")
    op.drop_table("insurers")
