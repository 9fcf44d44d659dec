"""Room for encrypted TOTP secrets (users.totp_secret, portal_session.enrol_secret).

A Fernet token of a 32-character secret is 140 characters; the columns held 64. The secrets
themselves are encrypted by the portal when it starts (it has the key; a migration has not).
SQLite does not enforce string lengths, so only other databases are changed.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (("users", "totp_secret"), ("portal_session", "enrol_secret"))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(200), existing_type=sa.String(64))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(64), existing_type=sa.String(200))
