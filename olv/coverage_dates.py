"""Coverage-date arithmetic: one definition of "covered on day d" for every part of OLV."""

from __future__ import annotations

from datetime import date


def covered_on(
    day: date,
    effective: date,
    expiration: date | None = None,
    cancellation: date | None = None,
) -> bool:
    """True when ``effective <= day`` and ``day`` is before the expiration and cancellation dates.

    Coverage ends at 12:01 a.m. on the cancellation (and expiration) date, so that day itself
    is not covered.
    """
    if day < effective:
        return False
    if expiration is not None and day >= expiration:
        return False
    return not (cancellation is not None and day >= cancellation)
