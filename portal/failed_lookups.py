"""A process's throttle on credentials that fail their database look-up, per client address.

An API token of the right shape that this process has not cached, and every session cookie,
costs a read of the state database on the threads that real requests share. A client that
sends made-up or stale credentials in a loop (a scan, or a script with a revoked token) would
make every one of those reads. Past ``per_minute`` failed look-ups from one address (bursts
of a minute's worth), its further unknown tokens get 429 at once and its unknown session
cookies count as no cookie (the pages offer the sign-in form), without a read, until the
address's allowance refills. Credentials this process already knows still pass, so the
people who share that address (one police department behind one NAT) keep their answers:
the tokens of its token cache, and the session cookies that it issued or that found a live
session in it lately.

The count lives in the process's memory: it protects the process's own threads, not a quota
shared between processes (the rate limits of :mod:`portal.ratelimit` are those). It never
delays a look-up that succeeds, and a look-up that succeeds costs the address nothing.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from portal.errors import ApiError

# The addresses remembered at once; the least recently failing is forgotten first (a flood
# from many addresses costs at most this many small entries).
MAX_ADDRESSES = 10_000


class FailedLookups:
    def __init__(
        self,
        per_minute: int,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_addresses = max_addresses
        self._clock = clock
        self._left: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when
        # Session cookies that found a live session lately: they pass a throttled address.
        self._vouched: OrderedDict[str, None] = OrderedDict()

    def vouched(self, credential: str) -> bool:
        """Whether ``credential`` passed a look-up in this process lately (:meth:`passed`)."""
        return credential in self._vouched

    def passed(self, credential: str) -> None:
        """Remember that ``credential`` found its owner (the most recent ``max_addresses``)."""
        self._vouched[credential] = None
        self._vouched.move_to_end(credential)
        while len(self._vouched) > self.max_addresses:
            self._vouched.popitem(last=False)

    def over(self, address: str | None) -> bool:
        """Whether ``address`` has no failed look-up left (no address, not a network client:
        never)."""
        return address is not None and self._refilled(address) < 1.0

    def refuse_when_over(self, address: str | None) -> None:
        """429 (with ``Retry-After``) when ``address`` has no failed look-up left; call before
        the look-up."""
        if address is None:
            return
        left = self._refilled(address)
        if left >= 1.0:
            return
        wait = math.ceil((1.0 - left) / self.rate)
        raise ApiError(
            429,
            "too many unknown tokens or sessions from this address; "
            f"try again in {wait} s with a valid one",
            headers={"Retry-After": str(wait)},
        )

    def failed(self, address: str | None) -> None:
        """Count one failed look-up against ``address``."""
        if address is None:
            return
        left = self._refilled(address)
        self._left[address] = (max(0.0, left - 1.0), self._clock())
        self._left.move_to_end(address)
        while len(self._left) > self.max_addresses:
            self._left.popitem(last=False)

    def _refilled(self, address: str) -> float:
        entry = self._left.get(address)
        if entry is None:
            return self.capacity
        left, at = entry
        return min(self.capacity, left + max(0.0, self._clock() - at) * self.rate)
