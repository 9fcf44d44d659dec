"""Token-bucket rate limits kept in memory (one portal process; see the README).

Each key (an API token id, or an account for the pages) may make ``per_minute`` requests a
minute on average, with bursts of up to ten seconds' worth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, per_minute: int, *, burst_seconds: float = 10.0, max_keys: int = 100_000):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str) -> _Bucket:
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # forgetting is safe: every key starts with a full bucket
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        return bucket

    def left(self, key: str) -> int:
        """How many requests ``key`` may make right now."""
        return int(self._bucket(key).tokens)

    def allow(self, key: str, cost: float = 1.0) -> float:
        """0 when allowed (and counted); else the seconds to wait before trying again (never
        enough when ``cost`` is over ``capacity``)."""
        bucket = self._bucket(key)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate
