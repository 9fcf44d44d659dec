"""The signed bytes as the digits printed in the PDF-417 symbol, and back.

A card's barcode holds only decimal digits: the COSE_Sign1 bytes, with a leading 0x01 byte (so
leading zero bytes survive), read as one big-endian integer and written in base 10. PDF-417's
numeric compaction packs 44 digits into 15 codewords, which is as dense as its byte mode
(0.82 against 0.83 codewords per byte), and digits survive every path a barcode's text takes:
a handheld scanner typing into a form, a phone app's copy and paste, a terminal. A version
digit comes first so that a later format can be told apart.
"""

from __future__ import annotations

VERSION_DIGIT = "1"
MAX_DIGITS = 1400  # the largest card OLV can print is ~1,100 digits


class ArmourError(ValueError):
    """Text that is not a card's barcode."""


def encode(data: bytes) -> str:
    return VERSION_DIGIT + str(int.from_bytes(b"\x01" + data, "big"))


def decode(text: str) -> bytes:
    text = text.strip()
    if not text:
        raise ArmourError("the barcode text is empty")
    if len(text) > MAX_DIGITS:
        raise ArmourError("the barcode text is longer than any card's")
    if not (text.isascii() and text.isdigit()):
        raise ArmourError("the barcode text is not an OLV ID card (digits only)")
    if text[0] != VERSION_DIGIT:
        raise ArmourError("the barcode is of an unknown ID card format")
    try:
        number = int(text[1:])
        raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    except ValueError:
        # "1" alone has no number at all; a caller tells text that is no card apart from a
        # card that is not valid by this error's type, so nothing else may escape.
        raise ArmourError("the barcode text is not an OLV ID card") from None
    if not raw or raw[0] != 1 or encode(raw[1:]) != text:
        raise ArmourError("the barcode text is not an OLV ID card")
    return raw[1:]
