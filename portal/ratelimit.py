"""Rate limits shared by every portal process and host, kept in the state database.

Each key has one row in ``portal_rate`` (key, tokens, updated_at), changed by one statement
per check: an ``INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`` that computes what the key
has left in SQL, so that two processes checking the same key at once are ordered by the
database (a row lock on PostgreSQL, the write lock on SQLite) and never both spend the last
token. A refused check writes nothing (its ``WHERE`` fails) and returns no row.

Two kinds of limit use the table, each key always with the same kind:

* :class:`Bucket` — a token bucket: ``per_minute`` on average, bursts of up to
  ``burst_seconds`` worth (API tokens and accounts signed in on the pages; the public
  enforcement status page per address). ``updated_at`` is when ``tokens`` was last counted.
* :class:`Window` — at most ``limit`` in a window that starts at the first attempt and starts
  afresh once it has passed (sign-in attempts per name and per address). ``updated_at`` is
  when the window began, ``tokens`` what is left of it.

Times are seconds since the epoch, given by the caller (the portal host's clock; hosts are
kept in step by NTP). A host whose clock is behind never refills a bucket backwards: the
elapsed time counts from the latest moment any host wrote.

The statement for API requests also reads ``portal_auth_version`` (:mod:`portal.deps`), so the
check that a cached token is still what it was costs no extra round trip.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from portal.gathered_takes import GatheredTakes
from portal.state_reads import RecordsAlong, StateReader

# A row untouched this long is a full bucket or a passed window, whatever its rule (a bucket
# refills in at most a minute, a window lasts a minute): deleting it changes no answer.
FORGET_AFTER_SECONDS = 3600.0

_VERSION = "coalesce((SELECT version FROM portal_auth_version WHERE id = 1), 0)"
_BUCKET = """
INSERT INTO portal_rate (key, tokens, updated_at) {rows}
ON CONFLICT (key) DO UPDATE SET
    tokens = {least}(:capacity,
        portal_rate.tokens + {greatest}(0, :now - portal_rate.updated_at) * :rate) - :cost,
    updated_at = {greatest}(portal_rate.updated_at, :now)
WHERE {least}(:capacity,
    portal_rate.tokens + {greatest}(0, :now - portal_rate.updated_at) * :rate) >= :cost
RETURNING {returning}
"""
_ONE_KEY = "VALUES (:key, :capacity - :cost, :now)"
# Several keys of one bucket rule (PostgreSQL): each key at most once, or the upsert would
# have to change one row twice.
_KEYS = "SELECT asked, :capacity - :cost, :now FROM unnest(CAST(:keys AS text[])) AS asked"
# A loop turn's takes and each one's VIN records (portal.gathered_takes): one row per record
# (or one of NULLs), in the order the keys were given; ``tokens`` NULL where refused.
_GATHERED = """
WITH taken AS ({take})
SELECT asked.i, taken.tokens, {version}, records.*
FROM unnest(CAST(:keys AS text[]), CAST(:vins AS text[])) WITH ORDINALITY AS asked(key, vin, i)
LEFT JOIN taken ON taken.key = asked.key
LEFT JOIN LATERAL ({records}) AS records ON true
ORDER BY asked.i, records.vin, records.naic, records.effective_date
"""
_BUCKET_STATE = """
SELECT v.version, r.tokens, r.updated_at
FROM (SELECT {version} AS version) AS v LEFT JOIN portal_rate AS r ON r.key = :key
"""
_WINDOW = """
INSERT INTO portal_rate (key, tokens, updated_at) VALUES (:key, :limit - 1, :now)
ON CONFLICT (key) DO UPDATE SET
    tokens = CASE WHEN portal_rate.updated_at <= :now - :window
        THEN :limit - 1 ELSE portal_rate.tokens - 1 END,
    updated_at = CASE WHEN portal_rate.updated_at <= :now - :window
        THEN :now ELSE portal_rate.updated_at END
WHERE portal_rate.updated_at <= :now - :window OR portal_rate.tokens >= 1
RETURNING tokens
"""
FORGET = "DELETE FROM portal_rate WHERE updated_at < :before"


@cache
def bucket_sql(dialect: str) -> tuple[str, str]:
    """The take and the look-back statements for ``dialect`` (``:name`` parameters)."""
    least, greatest = ("LEAST", "GREATEST") if dialect == "postgresql" else ("min", "max")
    returning = f"tokens, {_VERSION}"
    take = _BUCKET.format(least=least, greatest=greatest, rows=_ONE_KEY, returning=returning)
    return take, _BUCKET_STATE.format(version=_VERSION)


def gathered_sql(records_sql: str) -> str:
    """PostgreSQL: the takes of several keys of one bucket rule (``:keys``, each once) with
    the records of a VIN each (``:vins``), read by ``records_sql`` for the column
    ``asked.vin``; rows of (i, tokens or NULL, auth version, the record's columns)."""
    take = _BUCKET.format(least="LEAST", greatest="GREATEST", rows=_KEYS, returning="key, tokens")
    return _GATHERED.format(take=take.strip(), version=_VERSION, records=records_sql)


@dataclass(frozen=True)
class Bucket:
    per_minute: float
    burst_seconds: float = 10.0

    @property
    def rate(self) -> float:
        """Tokens per second."""
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate * self.burst_seconds)

    def params(self, key: str, cost: float, now: float) -> dict[str, object]:
        return {
            "key": key,
            "cost": float(cost),
            "now": now,
            "rate": self.rate,
            "capacity": self.capacity,
        }

    def refilled(self, tokens: float, updated_at: float, now: float) -> float:
        return min(self.capacity, tokens + max(0.0, now - updated_at) * self.rate)


@dataclass(frozen=True)
class Taken:
    """A bucket's answer: ``wait`` is 0 when the cost was taken, else the seconds until it
    could be (``math.inf`` when it never fits); ``left`` the whole tokens left; ``version`` the
    ``portal_auth_version`` the same statement read."""

    wait: float
    left: int
    version: int


def refused(bucket: Bucket, cost: float, now: float, rows: list[tuple[Any, ...]]) -> Taken:
    """The answer for a refused take, from the look-back statement's row."""
    version, tokens, updated_at = rows[0]
    if tokens is None or updated_at is None:  # forgotten in between: a full bucket
        left = bucket.capacity
    else:
        left = bucket.refilled(float(tokens), float(updated_at), now)
    wait = math.inf if cost > bucket.capacity else max((cost - left) / bucket.rate, 1e-3)
    return Taken(wait, int(left), int(version))


class SharedLimits:
    """The buckets' statements, run on the state reader's connections (:mod:`portal.state_reads`:
    on PostgreSQL no thread hand-off), each within the seconds it is given."""

    def __init__(self, reads: StateReader) -> None:
        self.reads = reads
        self._take, self._state = bucket_sql(reads.engine.dialect.name)
        # A verification's take reads its VIN's records along, gathered per loop turn, when
        # the primary is where the records are read (not with a read replica).
        self._gathered: GatheredTakes | None = None
        if reads.reads_along():
            if reads.on_threads():
                sql = self._take  # run once per take, in one transaction
            else:
                sql = gathered_sql(reads.records_beside("asked.vin"))
            self._gathered = GatheredTakes(reads, sql)

    async def take(
        self,
        bucket: Bucket,
        key: str,
        cost: float,
        seconds: float,
        along: RecordsAlong | None = None,
    ) -> Taken:
        """Take ``cost`` from ``key``'s bucket; raises :class:`portal.errors.ApiError` 503 when
        the database fails or does not answer within ``seconds``. With ``along``, the same
        round trip reads that VIN's records into it, when the primary is where they are read
        (a verification's two database round trips made one)."""
        now = time.time()
        if cost <= bucket.capacity:
            if along is not None and self._gathered is not None:
                seconds = min(seconds, along.by - time.monotonic())
                rule = (bucket.rate, bucket.capacity, float(cost))
                rows, records = await self._gathered.take(rule, key, along.vin, seconds)
                along.records = records
            else:
                rows = await self.reads.execute(self._take, bucket.params(key, cost, now), seconds)
            if rows:
                tokens, version = rows[0]
                return Taken(0.0, int(tokens), int(version))
        rows = await self.reads.execute(self._state, {"key": key}, seconds)
        return refused(bucket, cost, now, rows)

    async def forget_old(self, seconds: float) -> None:
        """Delete rows whose state no longer matters (:data:`FORGET_AFTER_SECONDS`)."""
        before = time.time() - FORGET_AFTER_SECONDS
        await self.reads.execute(FORGET, {"before": before}, seconds)


@dataclass(frozen=True)
class Window:
    limit: int
    seconds: float = 60.0


def within_window(db: Session, key: str, window: Window, now: float) -> bool:
    """Count one attempt for ``key`` in the caller's transaction; False (and nothing counted)
    when its window already has ``limit``."""
    left = db.execute(
        text(_WINDOW),
        {"key": key, "limit": float(window.limit), "window": window.seconds, "now": now},
    ).scalar()
    return left is not None
