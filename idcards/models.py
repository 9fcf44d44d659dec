"""The issuer's own log of the cards it printed (table ``idcard_issued``, migration 0008).

Kept where the issuer runs ``olv cards issue``: card id, time, issuer, key id and template —
no names, policy numbers or VINs (the card itself carries those).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from olv.db import Base


class IssuedCard(Base):
    __tablename__ = "idcard_issued"
    __table_args__ = (Index("ix_idcard_issued_issued_at", "issued_at"),)

    card_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    issuer: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(8))
    fs75: Mapped[bool] = mapped_column(Boolean, default=False)
