"""A small time-to-live cache for hot, rarely changing reads (valid tokens, the registry).

What a cache keeps may be stale for up to its ``ttl``: an insurer change takes effect at most
that many seconds later in a running portal. The token cache does not rely on its ``ttl`` for
revocation: every request checks the shared auth version, and a move ``clear()``s the cache
(:mod:`portal.deps`).

With ``refresh_after``, :meth:`TtlCache.lookup` also says when a valid entry is due to be
read again: the caller re-reads it in the background, so a key in steady use never makes a
request wait for the source, while the ``ttl`` bound still holds.

A read from the source may race a change: a re-read begun before a token was revoked can end
after it. So a caller takes :meth:`TtlCache.mark` *before* reading and passes it to
:meth:`TtlCache.put`: the entry's age counts from that moment, not from when it was stored (a
stale answer expires within ``ttl`` of the change, in every process), and a :meth:`clear` in
between (a change made in this process) makes the put a no-op.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Mark:
    """When a read from the source began, and the cache's generation then."""

    at: float
    generation: int


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        ttl: float,
        max_items: int = 10_000,
        refresh_after: float | None = None,
        refresh_spread: float = 0.0,
    ) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self.refresh_after = ttl if refresh_after is None else min(refresh_after, ttl)
        # Each entry falls due up to this fraction of ``refresh_after`` early, at random:
        # entries stored together (every token in use, read again after a restart) would
        # otherwise fall due together for good, and be re-read in one burst every time.
        self.refresh_spread = min(max(refresh_spread, 0.0), 1.0)
        self._items: dict[K, tuple[float, float, V]] = {}  # key -> (stored at, due age, value)
        self._refreshing: set[K] = set()
        self._generation = 0

    def mark(self) -> Mark:
        return Mark(time.monotonic(), self._generation)

    def get(self, key: K) -> V | None:
        return self.lookup(key)[0]

    def lookup(self, key: K) -> tuple[V | None, bool]:
        """The value (None when missing or expired), and whether it is due for a re-read
        that nobody has claimed yet (see :meth:`claim_refresh`)."""
        entry = self._items.get(key)
        if entry is None:
            return None, False
        stored, due, value = entry
        age = time.monotonic() - stored
        if age >= self.ttl:
            self._items.pop(key, None)
            self._refreshing.discard(key)
            return None, False
        return value, age >= due and key not in self._refreshing

    def claim_refresh(self, key: K) -> None:
        """One re-read per key at a time; :meth:`put` or :meth:`drop` ends the claim."""
        self._refreshing.add(key)

    def release(self, key: K) -> None:
        """End a claim whose re-read failed, so that the next :meth:`lookup` asks again."""
        self._refreshing.discard(key)

    def put(self, key: K, value: V, since: Mark | None = None) -> bool:
        """Store ``value`` read from the source since ``since`` (default: now); False, and
        nothing stored, when the cache was cleared after that read began."""
        self._refreshing.discard(key)
        if since is not None and since.generation != self._generation:
            return False
        if len(self._items) >= self.max_items:
            self._items.clear()  # simple and safe: everything is re-read on the next miss
        due = self.refresh_after * (1.0 - self.refresh_spread * random.random())
        self._items[key] = (time.monotonic() if since is None else since.at, due, value)
        return True

    def drop(self, key: K) -> None:
        self._items.pop(key, None)
        self._refreshing.discard(key)

    def clear(self) -> None:
        """Forget everything, including what reads now in flight would store."""
        self._generation += 1
        self._items.clear()
        self._refreshing.clear()
