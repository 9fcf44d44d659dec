"""The second factor: time-based one-time passwords (RFC 6238; 30-s steps, 6 digits, SHA-1).

These are the parameters every authenticator app uses by default. A code is accepted for the
current step and one step either side (phone clocks drift), and never twice: the caller keeps
the last step used per person and passes it in.
"""

from __future__ import annotations

from datetime import datetime

import pyotp
import segno

ISSUER = "OLV state portal"
STEP_SECONDS = 30
DIGITS = 6
VALID_WINDOW = 1  # steps either side of now


def new_secret() -> str:
    """A fresh 160-bit base32 secret (the RFC 4226 recommended length)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, username: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The URI as an inline SVG QR code (rendered here: the portal loads nothing from outside)."""
    # omitsize: a viewBox instead of a fixed size, so CSS fits the code to the screen.
    qr = segno.make(uri, error="m")
    return qr.svg_inline(scale=5, border=2, title="TOTP QR code", omitsize=True)


def current_code(secret: str, at: datetime) -> str:
    return pyotp.TOTP(secret).at(at)


def matching_step(secret: str, code: str, at: datetime, last_step: int | None) -> int | None:
    """The time step ``code`` belongs to, if it is valid at ``at`` and newer than ``last_step``."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(at.timestamp()) // STEP_SECONDS
    for step in range(now_step - VALID_WINDOW, now_step + VALID_WINDOW + 1):
        if last_step is not None and step <= last_step:
            continue
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None
