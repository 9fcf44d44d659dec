"""ID cards (SPEC §7): the state's registry of issuers and keys, and an issuer's card log.

Written by hand to match ``portal/card_issuers.py`` and ``idcards/models.py``.

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "card_issuer",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("code", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(7), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("naic", sa.String(5)),
        sa.Column("created_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_card_issuer"),
        sa.UniqueConstraint("code", name="uq_card_issuer_code"),
    )
    op.create_index("ix_card_issuer_naic", "card_issuer", ["naic"])
    op.create_table(
        "card_key",
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column(
            "issuer_id",
            sa.Integer,
            sa.ForeignKey(
                "card_issuer.id", ondelete="CASCADE", name="fk_card_key_issuer_id_card_issuer"
            ),
            nullable=False,
        ),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("added_at", Stamp, nullable=False),
        sa.Column("revoked_at", Stamp),
        sa.Column("revoke_reason", sa.String(11)),
        sa.PrimaryKeyConstraint("key_id", name="pk_card_key"),
    )
    op.create_index("ix_card_key_issuer_id", "card_key", ["issuer_id"])
    op.create_table(
        "idcard_issued",
        sa.Column("card_id", sa.String(16), nullable=False),
        sa.Column("issued_at", Stamp, nullable=False),
        sa.Column("issuer", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("template", sa.String(8), nullable=False),
        sa.Column("fs75", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("card_id", name="pk_idcard_issued"),
    )
    op.create_index("ix_idcard_issued_issued_at", "idcard_issued", ["issued_at"])


def downgrade() -> None:
    op.drop_index("ix_idcard_issued_issued_at", "idcard_issued")
    op.drop_table("idcard_issued")
    op.drop_index("ix_card_key_issuer_id", "card_key")
    op.drop_table("card_key")
    op.drop_index("ix_card_issuer_naic", "card_issuer")
    op.drop_table("card_issuer")
