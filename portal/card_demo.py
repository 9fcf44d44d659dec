"""``olv demo``'s ID cards: a demo issuer with a key, registered with the state, and a printed
sample card for the demo's insured vehicle that the "Check a card" page accepts."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import Engine

from idcards import issue, keys
from idcards.card import Card
from olv import db
from portal import card_issuers

ISSUER = "PC-000001"
ISSUER_NAME = "Demo Agency"
PIN = "246810"
KEY_FILE = "olv-demo-issuer.key"
CARD_FILE = "olv-demo-card.pdf"

BANNER = """
ID cards: demo issuer {issuer} ({name}); its key {key} (PIN {pin}), registered with the state.
  Sample card:  {card}
  Check it:     {portal}cards/check as officer (upload the PDF or a photo of it), or
                olv cards verify {card_name}
  More cards:   echo {pin} | olv cards issue --key {key_name} --csv CARDS.csv -o cards.pdf
"""


def seed(
    engine: Engine, workdir: Path, naic: str, policy: str, vin: str, today: date
) -> tuple[Path, Path]:
    """The issuer, its key (made once, kept in ``workdir``) and a sample card PDF."""
    key_path = workdir / KEY_FILE
    if key_path.exists():
        signing = keys.load_signing(key_path, PIN)
    else:
        signing, _ = keys.generate(ISSUER, PIN, key_path)
    with db.transaction(engine) as session:
        card_issuers.add_issuer(session, ISSUER, "license", ISSUER_NAME, naic, actor="demo")
        if card_issuers.lookup(session, signing.key_id_text) is None:
            card_issuers.add_key(session, ISSUER, signing.private.public_key(), actor="demo")
    card = Card(
        template="NY",
        issuer=ISSUER,
        insurer_name="Demo Insurance Company",
        naic=naic,
        policy_number=policy,
        effective=today - timedelta(days=30),
        expires=today + timedelta(days=335),
        issued=today,
        names=("DEMO DRIVER",),
        year=2003,
        make="HONDA",
        vin=vin,
    )
    card_path = workdir / CARD_FILE
    issue.issue(engine, [card], signing, card_path)
    return key_path, card_path


def banner(portal_url: str, key_path: Path, card_path: Path) -> str:
    return BANNER.format(
        issuer=ISSUER,
        name=ISSUER_NAME,
        key=key_path,
        key_name=key_path.name,
        pin=PIN,
        card=card_path,
        card_name=card_path.name,
        portal=portal_url,
    )
