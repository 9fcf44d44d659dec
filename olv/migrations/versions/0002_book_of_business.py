"""State-side book of business: received files, master records, NAIC pointers, issues, contacts.

Written by hand to match ``bob_loader/models.py`` (see its docstring for the generation swap).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bob_file",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("naics", sa.Text, nullable=False),
        sa.Column("account", sa.String(100)),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("loaded", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("warnings", sa.Integer, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("sha256", name="uq_bob_file_sha256"),
        sa.CheckConstraint(
            "status IN ('loading', 'accepted', 'rejected')", name="ck_bob_file_status"
        ),
    )
    op.create_table(
        "bob_record",
        sa.Column("id", RowId, primary_key=True),
        sa.Column("file_id", sa.Integer, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("policy_type", sa.String(2), nullable=False),
        sa.Column("policy_number", sa.String(30), nullable=False),
        sa.Column("policy_key", sa.String(30), nullable=False),
        sa.Column("vin", sa.String(25)),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("expiration_date", sa.Date),
        sa.Column("commercial", sa.Boolean, nullable=False),
    )
    op.create_index("ix_bob_record_vin", "bob_record", ["vin"])
    op.create_index("ix_bob_record_naic_file_id", "bob_record", ["naic", "file_id"])
    op.create_table(
        "bob_current",
        sa.Column("naic", sa.String(5), primary_key=True),
        sa.Column(
            "file_id",
            sa.Integer,
            sa.ForeignKey("bob_file.id", name="fk_bob_current_file_id_bob_file"),
            nullable=False,
        ),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "bob_issue",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "file_id",
            sa.Integer,
            sa.ForeignKey("bob_file.id", ondelete="CASCADE", name="fk_bob_issue_file_id_bob_file"),
            nullable=False,
        ),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("field", sa.String(40), nullable=False),
        sa.Column("value", sa.String(300), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(7), nullable=False),
    )
    op.create_index("ix_bob_issue_file_id", "bob_issue", ["file_id"])
    op.create_table(
        "bob_contact",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.UniqueConstraint("naic", "email", name="uq_bob_contact_naic"),
    )
    op.create_index("ix_bob_contact_naic", "bob_contact", ["naic"])


def downgrade() -> None:
    op.drop_table("bob_contact")
    op.drop_table("bob_issue")
    op.drop_table("bob_current")
    op.drop_index("ix_bob_record_naic_file_id", "bob_record")
    op.drop_index("ix_bob_record_vin", "bob_record")
    op.drop_table("bob_record")
    op.drop_table("bob_file")
