"""The state's registry of ID-card issuers and their public keys (SPEC §7; ``olv issuers``).

An issuer is an agent or broker (by DFS licence number, e.g. ``PC-123456``) or an insurer (by
its 3-digit DMV insurer code, ICC; NYAIP is ICC 999), optionally tied to an insurer's NAIC so
that the insurer's liaisons see their own issuers. An issuer has any number of Ed25519 keys;
a key is revoked as ``compromised`` (cards dated on or after that day are not valid) or
``retired`` (cards dated after it are not). Tables ``card_issuer`` and ``card_key``
(migration 0008); changes are written to the security log.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import DateTime, ForeignKey, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from idcards import keys
from idcards.verify import REVOKE_REASONS, KnownKey
from olv import normalize
from olv.db import Base, as_utc
from portal import security_log

LICENSE = re.compile(r"[A-Z]{2,3}-[0-9]{3,10}")
ICC = re.compile(r"[0-9]{3}")
ISSUER_CHANGED = "card_issuer_changed"


class IssuerError(ValueError):
    """A registration refused; the message names the field at fault."""


class CardIssuer(Base):
    __tablename__ = "card_issuer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)  # licence number or ICC
    kind: Mapped[str] = mapped_column(String(7))  # license | icc
    name: Mapped[str] = mapped_column(String(200))
    naic: Mapped[str | None] = mapped_column(String(5), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CardKey(Base):
    __tablename__ = "card_key"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    issuer_id: Mapped[int] = mapped_column(
        ForeignKey("card_issuer.id", ondelete="CASCADE"), index=True
    )
    public_key: Mapped[str] = mapped_column(String(64))  # raw 32 bytes, hex
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoke_reason: Mapped[str | None] = mapped_column(String(11))


def issuer_code(license: str | None, icc: str | None) -> tuple[str, str]:
    """(code, kind) from exactly one of ``--license`` and ``--icc``."""
    if bool(license) == bool(icc):
        raise IssuerError("give exactly one of --license and --icc")
    if license:
        code = license.strip().upper()
        if not LICENSE.fullmatch(code):
            raise IssuerError("--license: a DFS licence number such as PC-123456")
        return code, "license"
    code = (icc or "").strip()
    if not ICC.fullmatch(code):
        raise IssuerError("--icc: the three-digit DMV insurer code")
    return code, "icc"


def add_issuer(
    session: Session, code: str, kind: str, name: str, naic: str | None, *, actor: str
) -> bool:
    """Register or update an issuer; True when it is new."""
    name = name.strip()
    if not name or len(name) > 200 or not normalize.is_field_text(name):
        raise IssuerError("--name: 1 to 200 characters")
    if naic is not None and not normalize.is_naic(naic):
        raise IssuerError("--naic: five digits")
    row = session.scalars(select(CardIssuer).where(CardIssuer.code == code)).first()
    created = row is None
    if row is None:
        row = CardIssuer(code=code, kind=kind, created_at=datetime.now(UTC))
        session.add(row)
    row.name, row.naic = name, naic
    security_log.record(
        session,
        ISSUER_CHANGED,
        username=actor,
        detail=f"{'added' if created else 'updated'} {code}",
    )
    return created


def find_issuer(session: Session, code: str) -> CardIssuer:
    row = session.scalars(select(CardIssuer).where(CardIssuer.code == code.strip().upper())).first()
    if row is None:
        raise IssuerError(f"no issuer {code.strip()!r}; add it with 'olv issuers add'")
    return row


def add_key(session: Session, code: str, public: Ed25519PublicKey, *, actor: str) -> str:
    issuer = find_issuer(session, code)
    kid = keys.key_id(public).hex()
    existing = session.get(CardKey, kid)
    if existing is not None:
        raise IssuerError(f"key {kid} is already registered")
    session.add(
        CardKey(
            key_id=kid,
            issuer_id=issuer.id,
            public_key=keys.raw_public(public).hex(),
            added_at=datetime.now(UTC),
        )
    )
    security_log.record(session, ISSUER_CHANGED, username=actor, detail=f"key {kid} for {code}")
    return kid


def revoke_key(
    session: Session, kid: str, reason: str, *, actor: str, at: datetime | None = None
) -> CardKey:
    """Revoke a key; a retired key may later be declared compromised (its date stays)."""
    if reason not in REVOKE_REASONS:
        raise IssuerError(f"--reason: one of {', '.join(REVOKE_REASONS)}")
    row = session.get(CardKey, kid.strip().lower())
    if row is None:
        raise IssuerError(f"no key {kid.strip()!r}")
    if row.revoked_at is not None and (row.revoke_reason == reason or reason == "retired"):
        raise IssuerError(f"key {row.key_id} is already revoked ({row.revoke_reason})")
    if row.revoked_at is None:
        row.revoked_at = at or datetime.now(UTC)
    row.revoke_reason = reason
    security_log.record(
        session, ISSUER_CHANGED, username=actor, detail=f"key {row.key_id} revoked ({reason})"
    )
    return row


def issuers(session: Session, naic: str | None = None) -> list[dict[str, Any]]:
    """Every issuer with its keys (only those tied to ``naic`` when given)."""
    query = select(CardIssuer).order_by(CardIssuer.code)
    if naic is not None:
        query = query.where(CardIssuer.naic == naic)
    rows = session.scalars(query).all()
    by_issuer: dict[int, list[dict[str, Any]]] = {r.id: [] for r in rows}
    if rows:
        key_rows = session.scalars(
            select(CardKey).where(CardKey.issuer_id.in_(by_issuer)).order_by(CardKey.added_at)
        )
        for key in key_rows:
            by_issuer[key.issuer_id].append(
                {
                    "key_id": key.key_id,
                    "added_at": as_utc(key.added_at).isoformat(),
                    "revoked_at": _iso(key.revoked_at),
                    "revoke_reason": key.revoke_reason,
                }
            )
    return [
        {"issuer": r.code, "kind": r.kind, "name": r.name, "naic": r.naic, "keys": by_issuer[r.id]}
        for r in rows
    ]


def lookup(session: Session, kid: str) -> KnownKey | None:
    """The registry's knowledge of a key id, for :func:`idcards.verify.verify_text`."""
    row = session.execute(
        select(CardKey, CardIssuer)
        .join(CardIssuer, CardIssuer.id == CardKey.issuer_id)
        .where(CardKey.key_id == kid)
    ).first()
    if row is None:
        return None
    key, issuer = row
    return KnownKey(
        key_id=key.key_id,
        issuer=issuer.code,
        issuer_name=issuer.name,
        public_key=Ed25519PublicKey.from_public_bytes(bytes.fromhex(key.public_key)),
        revoked_at=as_utc(key.revoked_at),
        revoke_reason=key.revoke_reason,
    )


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None
