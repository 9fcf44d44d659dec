"""One request id from the portal through the insurer call (``X-Request-ID``).

The portal takes the id its caller sent when it is well formed, else makes one; it answers
with it, sends it to every insurer it asks, and every JSON log line written while the request
is handled carries it (:mod:`olv.logging` reads :data:`current`). The SOAP service logs the id
its caller sent, checked the same way.

Well formed means 1 to 64 characters of letters, digits, ``.``, ``_`` and ``-``: enough for a
UUID or any tracing system's id, and nothing a log line could be bent with (no spaces, quotes,
line breaks, control characters). A value that is not is never logged nor passed on.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

HEADER = "X-Request-ID"
MAX_LENGTH = 64
_WELL_FORMED = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_LENGTH}}}")

# The id of the request being handled, for the log lines written meanwhile. asyncio tasks
# copy it: the portal's calls to insurers, made in tasks of their own, carry it too.
current: ContextVar[str | None] = ContextVar("olv_request_id", default=None)


def accept(value: str | None) -> str | None:
    """``value`` when it is a well-formed request id, else None."""
    if value is None or len(value) > MAX_LENGTH or not _WELL_FORMED.fullmatch(value):
        return None
    return value


def new() -> str:
    """A fresh id: 32 hex digits (128 random bits)."""
    return os.urandom(16).hex()
