"""An issuer's signing key: Ed25519, kept in a file sealed under a PIN.

The NY scheme gives an issuer a KEY and, separately, a PIN that unlocks it; OLV keeps that
shape with public-key cryptography. The private key file is JSON::

    {"olv_idcard_key": 1, "issuer": "PC-123456", "key_id": "…16 hex…",
     "public_key": "<base64 raw 32 bytes>",
     "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "<base64 16 bytes>"},
     "cipher": "AES-256-GCM", "nonce": "<base64 12 bytes>", "ciphertext": "<base64>"}

The PIN goes through scrypt (RFC 7914; memory-hard, so a stolen file cannot be tried at GPU
speed) to an AES-256-GCM key that seals the 32-byte Ed25519 seed; the issuer, the key id and
the public key are the associated data, so none of them can be swapped in the file. The
public half is an ordinary PEM SubjectPublicKeyInfo file, for the state's registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from idcards.cose import KID_BYTES
from olv.errors import OlvError, UsageError

FILE_FORMAT = 1
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # ~32 MiB and ~0.1 s per try
MIN_PIN = 6
MAX_KEY_FILE = 16 * 1024


class KeyFileError(UsageError):
    """A key file that is missing, not one of OLV's, or damaged."""


class WrongPin(OlvError):
    """The PIN does not open the key file (or the file was altered)."""


@dataclass(frozen=True)
class SigningKey:
    issuer: str
    key_id: bytes
    private: Ed25519PrivateKey

    @property
    def key_id_text(self) -> str:
        return self.key_id.hex()


def key_id(public: Ed25519PublicKey) -> bytes:
    """The first 8 bytes of SHA-256 over the raw public key (printed as 16 hex digits)."""
    return hashlib.sha256(raw_public(public)).digest()[:KID_BYTES]


def raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def check_pin(pin: str) -> None:
    if len(pin) < MIN_PIN:
        raise UsageError(f"the PIN must have at least {MIN_PIN} characters")


def _kdf(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(pin.encode("utf-8"))


def _aad(issuer: str, kid: bytes, public: bytes) -> bytes:
    return json.dumps([issuer, kid.hex(), public.hex()]).encode()


def generate(issuer: str, pin: str, path: Path) -> tuple[SigningKey, Path]:
    """A new key sealed under ``pin`` at ``path`` (mode 0600, never overwritten) and its public
    key next to it as ``<path>.pub``; returns the key and the public file's path."""
    check_pin(pin)
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    kid = key_id(public)
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    sealed = AESGCM(_kdf(pin, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)).encrypt(
        nonce, seed, _aad(issuer, kid, raw_public(public))
    )
    document = {
        "olv_idcard_key": FILE_FORMAT,
        "issuer": issuer,
        "key_id": kid.hex(),
        "public_key": _b64(raw_public(public)),
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": _b64(salt)},
        "cipher": "AES-256-GCM",
        "nonce": _b64(nonce),
        "ciphertext": _b64(sealed),
    }
    public_path = path.with_name(path.name + ".pub")
    for target in (path, public_path):
        if target.exists():
            raise UsageError(f"{target}: already exists; a key file is never overwritten")
    # O_EXCL + 0600 from the first byte: the sealed key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=1)
        out.write("\n")
    public_path.write_text(public_pem(public, issuer, kid), encoding="ascii")
    return SigningKey(issuer, kid, private), public_path


def public_pem(public: Ed25519PublicKey, issuer: str, kid: bytes) -> str:
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    return f"OLV ID-card public key\nissuer: {issuer}\nkey id: {kid.hex()}\n{pem}"


def load_public(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (text before the PEM block is ignored)."""
    data = _read_small(path)
    start = data.find(b"-----BEGIN PUBLIC KEY-----")
    try:
        public = serialization.load_pem_public_key(data[start:] if start >= 0 else data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 public key")
    return public


def load_signing(path: Path, pin: str) -> SigningKey:
    data = _read_small(path)
    try:
        doc = json.loads(data)
        kdf = doc["kdf"]
        if doc["olv_idcard_key"] != FILE_FORMAT or kdf["name"] != "scrypt":
            raise ValueError("format")
        issuer, kid = str(doc["issuer"]), bytes.fromhex(doc["key_id"])
        public = base64.b64decode(doc["public_key"], validate=True)
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(doc["nonce"], validate=True)
        sealed = base64.b64decode(doc["ciphertext"], validate=True)
        n, r, p = kdf["n"], kdf["r"], kdf["p"]
        if len(nonce) != 12:
            raise ValueError("nonce")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{path}: not an OLV ID-card key file") from exc
    # Only the parameters generate() writes, which no file of OLV's differs from: scrypt's cost
    # grows with n * r * p, so a doctored file could otherwise cost gigabytes and minutes before
    # the seal is even tried. (The values are not echoed: they may be anything.)
    if not all(type(v) is int for v in (n, r, p)) or (n, r, p) != (SCRYPT_N, SCRYPT_R, SCRYPT_P):
        raise KeyFileError(
            f"{path}: the key file's scrypt parameters are not OLV's "
            f"(n={SCRYPT_N}, r={SCRYPT_R}, p={SCRYPT_P}); the file was altered"
        )
    try:
        seed = AESGCM(_kdf(pin, salt, n, r, p)).decrypt(nonce, sealed, _aad(issuer, kid, public))
    except InvalidTag:
        raise WrongPin(f"{path}: wrong PIN, or the key file was altered") from None
    private = Ed25519PrivateKey.from_private_bytes(seed)
    if raw_public(private.public_key()) != public or key_id(private.public_key()) != kid:
        raise KeyFileError(f"{path}: the key does not match its public key")
    return SigningKey(issuer, kid, private)


def _read_small(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    if len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: far larger than a key file")
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
