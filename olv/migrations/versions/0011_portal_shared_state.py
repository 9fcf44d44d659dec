"""State shared by every portal process: rate limits, and a version of who the tokens are.

``portal_rate`` holds each rate limit's state (API tokens, signed-in accounts, sign-in
attempts per name and per address, the public enforcement status page), changed by one
statement per request (:mod:`portal.ratelimit`). ``portal_auth_version`` holds one number that
triggers move whenever a token is revoked, re-dated or deleted, or a person is disabled,
renamed, deleted or given another role or NAIC, whoever makes the change (a portal process,
the command line, plain SQL): every portal process reads it with each request's rate-limit
statement and forgets the tokens it has cached when it moved.

Written by hand to match ``portal/models.py``.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# The columns whose change changes what a token may do (portal.tokens.authenticate reads them).
WATCHED = {
    "api_tokens": ("revoked_at", "expires_at", "token_hash", "user_id"),
    "users": ("disabled", "role", "naic", "username"),
}
# An upsert, so that a missing row (emptied by hand) comes back instead of freezing the number.
BUMP = (
    "INSERT INTO portal_auth_version (id, version) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET version = portal_auth_version.version + 1"
)


def upgrade() -> None:
    op.create_table(
        "portal_rate",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_portal_rate"),
    )
    op.create_index("ix_portal_rate_updated_at", "portal_rate", ["updated_at"])
    op.create_table(
        "portal_auth_version",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_portal_auth_version_one_row"),
        sa.PrimaryKeyConstraint("id", name="pk_portal_auth_version"),
    )
    op.execute("INSERT INTO portal_auth_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION portal_bump_auth_version() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        for table, columns in WATCHED.items():
            op.execute(
                f"CREATE TRIGGER {table}_auth_version AFTER UPDATE OF {', '.join(columns)} "
                f"OR DELETE ON {table} FOR EACH STATEMENT "
                "EXECUTE FUNCTION portal_bump_auth_version()"
            )
        return
    for table, columns in WATCHED.items():
        op.execute(
            f"CREATE TRIGGER {table}_auth_version_update AFTER UPDATE OF {', '.join(columns)} "
            f"ON {table} BEGIN {BUMP}; END"
        )
        op.execute(
            f"CREATE TRIGGER {table}_auth_version_delete AFTER DELETE ON {table} BEGIN {BUMP}; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER {table}_auth_version ON {table}")
        op.execute("DROP FUNCTION portal_bump_auth_version()")
    else:
        for table in WATCHED:
            op.execute(f"DROP TRIGGER {table}_auth_version_update")
            op.execute(f"DROP TRIGGER {table}_auth_version_delete")
    op.drop_table("portal_auth_version")
    op.drop_index("ix_portal_rate_updated_at", "portal_rate")
    op.drop_table("portal_rate")
