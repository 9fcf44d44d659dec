"""The portal's secret key: encrypts TOTP secrets at rest and keys the hash of unknown names.

The key comes from ``OLV_PORTAL_SECRET_KEY`` (at least 32 characters) or from the file named by
``OLV_PORTAL_SECRET_KEY_FILE`` (its first line). With neither, the portal keeps its own key in
:data:`DEFAULT_KEY_FILE` in its working directory, made on first start (random, mode 0600), so
``olv portal serve`` works out of the box yet a copy of the database alone reveals no second
factor; a key that exists but is unreadable or short stops the portal at start. Two
independent subkeys are derived from it with HKDF-SHA256: one for Fernet (AES-128-CBC with
HMAC-SHA256, from the ``cryptography`` package), one for HMAC-SHA256 name tags.

A stored secret starts with :data:`SEALED_PREFIX`; a value without it is a plaintext secret
written before encryption (or by the demo's seeding), which :func:`seal_plaintext_secrets`
encrypts when the portal starts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from olv.errors import ConfigError
from portal.models import User
from portal.settings import PortalSettings

MIN_KEY_LENGTH = 32
SEALED_PREFIX = "fernet:"
KEY_SETTING = "OLV_PORTAL_SECRET_KEY"
KEY_FILE_SETTING = "OLV_PORTAL_SECRET_KEY_FILE"
DEFAULT_KEY_FILE = Path("olv-portal-secret.key")

log = logging.getLogger(__name__)


class SecretKey:
    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"{KEY_SETTING}: must be at least {MIN_KEY_LENGTH} characters "
                "(make one with: openssl rand -base64 48)"
            )
        material = key.encode()
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(material, b"olv portal totp")))
        self._tag_key = _derive(material, b"olv portal log names")

    def seal(self, secret: str) -> str:
        return SEALED_PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, stored: str) -> str:
        """The secret; a value stored before encryption is returned as it is."""
        if not stored.startswith(SEALED_PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED_PREFIX)).decode()
        except InvalidToken:
            raise ConfigError(
                f"a TOTP secret cannot be decrypted with this {KEY_SETTING}: "
                "was the key changed? Reset that person's second factor"
            ) from None

    def tag(self, text: str) -> str:
        """A keyed hash of ``text`` (96 bits, hex): equal texts give equal tags, and without
        the key a tag cannot be tested against guesses."""
        return hmac.new(self._tag_key, text.encode(), hashlib.sha256).hexdigest()[:24]


def _derive(material: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(material)


def load(settings: PortalSettings) -> SecretKey:
    """The configured key; :class:`ConfigError` when there is none or it cannot be read."""
    if settings.secret_key is not None:
        return SecretKey(settings.secret_key.get_secret_value().strip())
    path = settings.secret_key_file
    if path is None:
        path = DEFAULT_KEY_FILE
        if make_key_file(path):
            log.warning(
                "no %s or %s set: made a new secret key in %s (mode 0600); keep it with the "
                "database's backups, or TOTP secrets cannot be read again",
                KEY_SETTING,
                KEY_FILE_SETTING,
                path.resolve(),
            )
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror.lower() if isinstance(exc, OSError) and exc.strerror else "unreadable"
        raise ConfigError(f"{KEY_FILE_SETTING}: {path}: {reason}") from None
    lines = text.splitlines()
    return SecretKey(lines[0].strip() if lines else "")


def make_key_file(path: Path) -> bool:
    """Write a new random key to ``path`` unless a file is there already; True if written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise ConfigError(
            f"cannot make a secret key file {path.resolve()}: {exc.strerror or exc}; "
            f"set {KEY_SETTING} or {KEY_FILE_SETTING}"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as sink:
        sink.write(secrets.token_urlsafe(48) + "\n")
    return True


def seal_plaintext_secrets(session: Session, key: SecretKey) -> int:
    """Encrypt every TOTP secret still stored in plaintext; returns how many. Each row is
    changed only if it still holds the value read, so processes starting together agree."""
    rows = session.execute(
        select(User.id, User.totp_secret).where(
            User.totp_secret.is_not(None), User.totp_secret.not_like(f"{SEALED_PREFIX}%")
        )
    ).all()
    for user_id, plain in rows:
        if plain is None:  # the query asked for set secrets only
            continue
        session.execute(
            update(User)
            .where(User.id == user_id, User.totp_secret == plain)
            .values(totp_secret=key.seal(plain))
            .execution_options(synchronize_session=False)
        )
    return len(rows)
