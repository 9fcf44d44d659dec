"""What the shared rate limit adds to each portal request (issue 16, item 1).

    python bench/shared_limits_bench.py [--db sqlite|postgresql] [--calls N] [--keys K]

Every API request now takes from its token's bucket in the state database, in one statement
that also reads the shared auth version (:mod:`portal.ratelimit`). This runs that statement
``--calls`` times through the portal's own code (:class:`portal.ratelimit.SharedLimits` on a
:class:`portal.state_reads.StateReader`: psycopg's asyncio pool on PostgreSQL, the reader's
threads on SQLite), from 8 concurrent tasks over ``--keys`` tokens, and in the same run the
floor: ``SELECT 1`` through the same path (what any statement costs there), and the in-memory
bucket the portal used before (a dict and a few floats). It prints wall and CPU time per call
(CPU of this process, which plays the portal; the database server's own work is in the wall
time) and the ratios to the floor, which are less sensitive to a busy machine than the wall
clock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from scratch_db import DEFAULT_PG_URL, fresh_database

from olv import db
from portal.ratelimit import Bucket, SharedLimits
from portal.state_reads import StateReader

CONCURRENCY = 8


class MemoryBucket:
    """The per-process bucket the portal kept before (for the comparison only)."""

    def __init__(self, bucket: Bucket) -> None:
        self.rate, self.capacity = bucket.rate, bucket.capacity
        self.items: dict[str, tuple[float, float]] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        tokens, at = self.items.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        allowed = tokens >= 1
        self.items[key] = (tokens - 1 if allowed else tokens, now)
        return allowed


async def timed(calls: int, one: object) -> tuple[float, float]:
    """(wall, CPU) seconds per call of ``one(i)`` from CONCURRENCY tasks."""
    queue = iter(range(calls))

    async def worker() -> None:
        for i in queue:
            await one(i)  # type: ignore[operator]

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


async def run(url: str, calls: int, keys: int) -> None:
    engine = db.make_engine(url)
    reads = StateReader(engine, 5.0)
    await reads.open()
    limits = SharedLimits(reads)
    bucket = Bucket(10**9)  # never refuses: every call is the full write
    memory = MemoryBucket(bucket)
    try:
        for i in range(200):  # warm the pool and the rows
            await limits.take(bucket, f"token:{i % keys}", 1, 5.0)

        async def floor(i: int) -> None:
            await reads.execute("SELECT 1", {}, 5.0)

        async def take(i: int) -> None:
            await limits.take(bucket, f"token:{i % keys}", 1, 5.0)

        async def in_memory(i: int) -> None:
            memory.allow(f"token:{i % keys}")

        results = {}
        for name, one in (("floor: SELECT 1", floor), ("shared bucket", take)) * 2:
            results[name] = await timed(calls, one)  # the second round counts (warm)
        results["in-memory bucket (before)"] = await timed(calls, in_memory)
    finally:
        await reads.close()
        engine.dispose()
    base_wall, base_cpu = results["floor: SELECT 1"]
    print(f"{'':28} {'wall µs':>9} {'CPU µs':>8} {'wall/floor':>10} {'CPU/floor':>10}")
    for name, (wall, cpu) in results.items():
        print(
            f"{name:28} {wall * 1e6:9.0f} {cpu * 1e6:8.0f} "
            f"{wall / base_wall:10.2f} {cpu / base_cpu:10.2f}"
        )
    shared, memory = results["shared bucket"], results["in-memory bucket (before)"]
    print(
        f"added per request: {(shared[0] - memory[0]) * 1e6:.0f} µs wall, "
        f"{(shared[1] - memory[1]) * 1e6:.0f} µs CPU of the portal process"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=32)
    args = parser.parse_args()
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, --db {args.db}"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(args.db, Path(tmp), args.pg_url) as url,
    ):
        db.upgrade(url)
        asyncio.run(run(url, args.calls, args.keys))


if __name__ == "__main__":
    main()
