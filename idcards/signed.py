"""A card signed into its barcode text, and a barcode text read back into a card."""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from idcards import armour, cose
from idcards.card import Card, CardError, from_map, to_map
from idcards.keys import SigningKey


def sign_card(card: Card, key: SigningKey) -> str:
    """The digits to print in the card's PDF-417 symbol."""
    payload = cbor2.dumps(to_map(card), canonical=True)
    return armour.encode(cose.sign(payload, key.private, key.key_id))


@dataclass(frozen=True)
class Unverified:
    """A barcode's message and card, well formed but with the signature not yet checked."""

    message: cose.Sign1
    card: Card

    @property
    def key_id(self) -> str:
        return self.message.kid.hex()


class Unreadable(ValueError):
    """Barcode text that does not hold a card of OLV's format."""


def read(text: str) -> Unverified:
    try:
        message = cose.parse(armour.decode(text))
        payload = cbor2.loads(message.payload)
        if cbor2.dumps(payload, canonical=True) != message.payload:
            raise Unreadable("the card's fields are not in canonical form")
        return Unverified(message, from_map(payload))
    except (armour.ArmourError, cose.CoseError, CardError) as exc:
        raise Unreadable(str(exc)) from exc
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise Unreadable("the card's fields are not CBOR") from exc
