"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA over Ed25519 (RFC 9053 §2.2), on cbor2 + cryptography.

Not pycose: its 1.1 release cannot decode under cbor2 6 (arrays come back as tuples), and the
subset needed here is small. What is produced::

    18([ bstr .cbor {1: -8, 4: kid}, {}, bstr payload, bstr signature ])

and what is accepted is exactly that shape, in canonical CBOR: the bytes read are re-encoded
and must come out identical, so no byte outside the signature's reach (the tag, the empty
unprotected map, a length written long-hand) can be changed without the card failing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

COSE_SIGN1_TAG = 18
HDR_ALG, HDR_KID = 1, 4
ALG_EDDSA = -8
KID_BYTES = 8
MAX_MESSAGE_BYTES = 1024  # a card is ~250 bytes; anything far larger is not one


class CoseError(ValueError):
    """Bytes that are not a COSE_Sign1 message of the form OLV signs."""


@dataclass(frozen=True)
class Sign1:
    kid: bytes
    payload: bytes
    protected: bytes
    signature: bytes

    def to_be_signed(self) -> bytes:
        return _sig_structure(self.protected, self.payload)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)


def sign(payload: bytes, key: Ed25519PrivateKey, kid: bytes) -> bytes:
    protected = cbor2.dumps({HDR_ALG: ALG_EDDSA, HDR_KID: kid}, canonical=True)
    signature = key.sign(_sig_structure(protected, payload))
    message = cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature])
    return cbor2.dumps(message, canonical=True)


def parse(data: bytes) -> Sign1:
    """The parts of a message, its form checked; the signature is not (see :func:`check`)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise CoseError("the signed card is larger than any card OLV issues")
    try:
        message = cbor2.loads(data)
        canonical = cbor2.dumps(message, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise CoseError("the barcode does not hold CBOR") from exc
    if canonical != data:
        raise CoseError("the signed card is not in canonical form")
    if not isinstance(message, cbor2.CBORTag) or message.tag != COSE_SIGN1_TAG:
        raise CoseError("the barcode does not hold a COSE_Sign1 message")
    parts = message.value
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise CoseError("a COSE_Sign1 message has four parts")
    protected, unprotected, payload, signature = parts
    if not all(isinstance(p, bytes) for p in (protected, payload, signature)):
        raise CoseError("COSE_Sign1 parts have the wrong types")
    if unprotected != {} or len(signature) != 64:
        raise CoseError("COSE_Sign1 headers or signature not of the form OLV signs")
    try:
        header = cbor2.loads(protected)
    except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
        raise CoseError("the protected header is not CBOR") from exc
    if (
        not isinstance(header, dict)
        or set(header) != {HDR_ALG, HDR_KID}
        or header[HDR_ALG] != ALG_EDDSA
        or not isinstance(header[HDR_KID], bytes)
        or len(header[HDR_KID]) != KID_BYTES
    ):
        raise CoseError("the protected header is not EdDSA with a key id")
    return Sign1(kid=header[HDR_KID], payload=payload, protected=protected, signature=signature)


def check(message: Sign1, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(message.signature, message.to_be_signed())
    except InvalidSignature:
        return False
    return True
