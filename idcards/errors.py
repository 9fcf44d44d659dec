"""Failures of the ID-card commands that are not a card's answer (``olv.errors`` tree)."""

from __future__ import annotations

from olv.errors import OlvError


class CannotRead(OlvError):
    """No card barcode could be read from the input: exit 2 on the command line, HTTP 422."""

    exit_code = 2
