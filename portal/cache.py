"""A small time-to-live cache for hot, rarely changing reads (valid tokens, the registry).

What a cache keeps may be stale for up to its ``ttl``: a revoked token still works, and an
insurer change takes effect, at most that many seconds later in a running portal (admin pages
in the same process call ``clear()`` to make their changes immediate).

With ``refresh_after``, :meth:`TtlCache.lookup` also says when a valid entry is due to be
read again: the caller re-reads it in the background, so a key in steady use never makes a
request wait for the source, while the ``ttl`` bound still holds.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self, ttl: float, max_items: int = 10_000, refresh_after: float | None = None
    ) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self.refresh_after = ttl if refresh_after is None else min(refresh_after, ttl)
        self._items: dict[K, tuple[float, V]] = {}  # key -> (stored at, value)
        self._refreshing: set[K] = set()

    def get(self, key: K) -> V | None:
        return self.lookup(key)[0]

    def lookup(self, key: K) -> tuple[V | None, bool]:
        """The value (None when missing or expired), and whether it is due for a re-read
        that nobody has claimed yet (see :meth:`claim_refresh`)."""
        entry = self._items.get(key)
        if entry is None:
            return None, False
        age = time.monotonic() - entry[0]
        if age >= self.ttl:
            self._items.pop(key, None)
            self._refreshing.discard(key)
            return None, False
        return entry[1], age >= self.refresh_after and key not in self._refreshing

    def claim_refresh(self, key: K) -> None:
        """One re-read per key at a time; :meth:`put` or :meth:`drop` ends the claim."""
        self._refreshing.add(key)

    def put(self, key: K, value: V) -> None:
        if len(self._items) >= self.max_items:
            self._items.clear()  # simple and safe: everything is re-read on the next miss
        self._items[key] = (time.monotonic(), value)
        self._refreshing.discard(key)

    def drop(self, key: K) -> None:
        self._items.pop(key, None)
        self._refreshing.discard(key)

    def clear(self) -> None:
        self._items.clear()
        self._refreshing.clear()
