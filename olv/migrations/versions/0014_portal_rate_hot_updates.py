"""A take from a rate limit rewrites its row in place: ``portal_rate`` loses its index on
``updated_at`` and, on PostgreSQL, keeps half of each page free.

Every verification, sign-in and page request updates one row of ``portal_rate``. PostgreSQL
can update a row within its page without touching the indexes (a heap-only tuple) only when
no indexed column changes and the page has room; ``updated_at`` changes on every take, so
each take left a new entry in both indexes and a dead row behind. Between vacuums (or where
autovacuum is off) the table and its indexes grew by a row per take, and each take's look-up
of its key walked the dead entries of every earlier one: the portal's answers slowed the
longer it ran (bench/RESULTS.md). With no index on the column and free room on the page,
each page's dead rows are reclaimed as it is read, vacuum or not, once no open transaction
can still see them.

Forgetting the keys idle for an hour (``DELETE … WHERE updated_at < …``, every ten minutes)
now reads the whole table: one row per key in use.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# Half of each page is left for the new versions of the rows on it.
FILL_FACTOR = 50


def upgrade() -> None:
    op.drop_index("ix_portal_rate_updated_at", "portal_rate")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE portal_rate SET (fillfactor = {FILL_FACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE portal_rate RESET (fillfactor)")
    op.create_index("ix_portal_rate_updated_at", "portal_rate", ["updated_at"])
