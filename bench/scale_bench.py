"""Scale bench (PostgreSQL): a state's book of business of 25,000,000 records, and what it takes.

    python bench/scale_bench.py [--records 25000000] [--per-naic 1000000] [--pg-url URL]
                                [--workers 2,4] [--duration 20]

In one run, on a fresh PostgreSQL database:

1. load: ``--records`` valid records as one file per NAIC (``--per-naic`` each, the way
   insurers send them), each generated into a temporary folder, loaded with ``olv bob load``
   (a subprocess, as operators run it) and deleted before the next is made, so the disk never
   holds more than one file. Prints the load time, records/s, the loader's CPU, and the ratio
   to PostgreSQL ``COPY`` of the first file's rows into an unindexed table (measured in the
   same run; the total is compared with that floor times the number of files);
2. VIN look-up, in process: ``olv bob lookup``'s own function (``find_by_vins``) for one VIN
   at a time, random VINs of the whole book (one in ten a miss): p50/p99 and PostgreSQL CPU
   per look-up; and a look-up of 900 VINs (one batch of ``olv bob lookup -``);
3. portal: ``bench/portal_bench.py``'s set-up on the same database (10,000 extra vehicles of a
   healthy local insurer, so that every query is answered ``confirmed``: the portal's VIN
   look-up runs against the full book), then ``olv portal serve`` with each of ``--workers``
   and 32 keep-alive API clients for ``--duration`` s: verifications/s, p50/p99, the portal's
   CPU and PostgreSQL's CPU per verification; one client alone gives the look-up p99 through
   the portal;
4. a capacity table from the per-core figures (the costlier of the portal runs): for each
   query rate, the cores the portal processes and the database take, and the hosts and read
   replicas that makes (at ``--utilisation`` of each core, ``--host-cores`` per host, one
   spare). The database figure counts all its CPU per verification (the look-ups, the token
   check, the query-log write), as if replicas took all of it: a little more than they do.

The machine is shared: its summary, the CPU calibration and the share of the cores that was
busy before the run are printed with the figures. Per-core figures (CPU ms per request) vary
less with other work than the wall-clock ones.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import portal_bench
import procstat
import uvloop
from bob_bench import copy_floor, timed_load
from scratch_db import DEFAULT_PG_URL, fresh_database
from servers import free_port
from sqlalchemy.engine import make_url

from bob_loader import synth
from bob_loader.lookup import find_by_vins
from olv import db

RATES = (100, 300, 1_000, 3_000, 10_000)  # verifications per second, state-wide


def naic_of(index: int) -> str:
    """The NAIC of the ``index``-th file: five digits, none of the portal bench's."""
    return f"{50000 + index}"


@dataclass
class Load:
    records: int
    files: int
    seconds: float
    loader_cpu: float
    first_seconds: float
    floor_seconds: float

    @property
    def floor_ratio(self) -> float:
        return self.first_seconds / self.floor_seconds

    @property
    def total_floor_ratio(self) -> float:
        return self.seconds / (self.floor_seconds * self.files)


def load_book(url: str, workdir: Path, records: int, per_naic: int) -> tuple[Load, list[int]]:
    """Generate and load one file per NAIC; returns the figures and the per-file counts."""
    counts = [min(per_naic, records - at) for at in range(0, records, per_naic)]
    total = 0.0
    cpu = 0.0
    first = floor = 0.0
    for index, count in enumerate(counts):
        path = workdir / f"Scale{index} 20261101.txt"
        started = time.perf_counter()
        synth.write_file(path, synth.records(naic_of(index), count))
        made = time.perf_counter() - started
        before = os.times()
        run = timed_load(url, path, "postgresql", "empty store")
        after = os.times()
        cpu += after.children_user - before.children_user
        cpu += after.children_system - before.children_system
        total += run.seconds
        if index == 0:
            first = run.seconds
            floor = copy_floor(url, path)
            engine = db.make_engine(url)
            with engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS bob_copy_floor")
            engine.dispose()
        path.unlink()
        done = sum(counts[: index + 1])
        print(
            f"  file {index + 1}/{len(counts)}: {count:,} records generated in {made:.0f} s,"
            f" loaded in {run.seconds:.1f} s ({done:,} loaded, {total:.0f} s so far)",
            file=sys.stderr,
            flush=True,
        )
    return Load(sum(counts), len(counts), total, cpu, first, floor), counts


def lookup_latency(url: str, counts: list[int], lookups: int) -> dict[str, Any]:
    """``find_by_vins`` for one VIN at a time; one in ten VINs is in no book."""
    rng = random.Random(11)
    vins = []
    for n in range(lookups):
        if n % 10 == 9:
            vins.append(synth.make_vin("99999", rng.randrange(10_000_000)))
        else:
            index = rng.randrange(len(counts))
            vins.append(synth.make_vin(naic_of(index), rng.randrange(counts[index])))
    engine = db.make_engine(url)
    name = make_url(url).database or ""
    latencies: list[float] = []
    hits = 0
    with engine.connect() as conn:
        list(find_by_vins(conn, vins[:50]))  # warm the connection and the plan
        backends = procstat.database_backends(name)
        pg_cpu = procstat.cpu_seconds(backends)
        for vin in vins:
            started = time.perf_counter()
            hits += len(list(find_by_vins(conn, [vin])))
            latencies.append((time.perf_counter() - started) * 1000)
        pg_cpu = procstat.cpu_seconds(backends) - pg_cpu
        batch = vins[:900]
        started = time.perf_counter()
        batch_hits = len(list(find_by_vins(conn, batch)))
        batch_ms = (time.perf_counter() - started) * 1000
    engine.dispose()
    return {
        "lookups": lookups,
        "hits": hits,
        "p50_ms": round(portal_bench.percentile(latencies, 50), 2),
        "p99_ms": round(portal_bench.percentile(latencies, 99), 2),
        "pg_cpu_ms": round(pg_cpu * 1000 / lookups, 3),
        "batch_900_ms": round(batch_ms, 1),
        "batch_900_hits": batch_hits,
    }


def _measure(
    base: str, pid: int, tokens: list[str], seconds: float, database: str, results: Any
) -> None:
    """In a process of its own: a warm-up, 32 clients (wrk when installed), then one client
    alone; CPU of the portal processes and of the database's backends per verification."""
    kind = "wrk" if portal_bench.shutil.which("wrk") else "python"

    async def run() -> dict[str, Any]:
        await portal_bench._phase(base, tokens, 10_000, 3.0, 0, pid, kind)  # warm-up
        backends = procstat.database_backends(database)
        pg = procstat.cpu_seconds(backends)
        many = await portal_bench._phase(base, tokens, 10_000, seconds, 0, pid, kind)
        pg = procstat.cpu_seconds(backends) - pg
        many["pg_cpu_ms_per_request"] = round(pg * 1000 / max(1, many["requests"]), 3)
        one = await portal_bench._python_clients(base, tokens[:1], 10_000, min(seconds, 10.0))
        return {"many": many, "one": one}

    results.put(uvloop.run(run()))


def portal_runs(
    url: str, workdir: Path, workers: list[int], seconds: float
) -> dict[int, dict[str, Any]]:
    insurer_env = {"OLV_DATABASE_URL": f"sqlite:///{workdir / 'insurer.db'}"}
    soap_port = free_port()
    soap_base = f"http://127.0.0.1:{soap_port}"
    database = make_url(url).database or ""
    figures: dict[int, dict[str, Any]] = {}
    with portal_bench.hung_socket() as hung_port:
        tokens = portal_bench.prepare(url, insurer_env, soap_base, hung_port, 10_000, 32, workdir)
        soap_cmd = [sys.executable, "-m", "olv", "soap", "serve", "--port", str(soap_port)]
        with portal_bench.server(soap_cmd, insurer_env, soap_port, workdir / "soap.log"):
            for count in workers:
                port = free_port()
                command = [sys.executable, "-m", "olv", "portal", "serve", "--port", str(port)]
                env = {
                    "OLV_DATABASE_URL": url,
                    "OLV_PORTAL_TOKEN_RATE_PER_MINUTE": "10000000",
                    "OLV_PORTAL_WORKERS": str(count),
                    "OLV_PORTAL_SECRET_KEY": secrets.token_urlsafe(32),
                }
                log = workdir / f"portal-{count}.log"
                with portal_bench.server(command, env, port, log) as (base, pid):
                    spawn = multiprocessing.get_context("spawn")
                    queue: Any = spawn.Queue()
                    process = spawn.Process(
                        target=_measure, args=(base, pid, tokens, seconds, database, queue)
                    )
                    process.start()
                    figures[count] = queue.get(timeout=seconds * 4 + 300)
                    process.join(30)
                print(f"  portal, {count} workers: {figures[count]}", file=sys.stderr, flush=True)
    return figures


def capacity(
    portal_cpu_ms: float, pg_cpu_ms: float, host_cores: int, utilisation: float
) -> list[str]:
    """Markdown rows: per query rate, cores and hosts for the portal and the database (the
    primary takes the writes; the look-ups spread over the read replicas)."""
    rows = [
        "| verifications/s | portal cores | portal hosts (one spare) "
        "| PostgreSQL cores | PostgreSQL hosts (one spare) | of which read replicas |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in RATES:
        portal_cores = rate * portal_cpu_ms / 1000 / utilisation
        pg_cores = rate * pg_cpu_ms / 1000 / utilisation
        portal_hosts = math.ceil(portal_cores / host_cores) + 1
        pg_hosts = math.ceil(pg_cores / host_cores) + 1
        rows.append(
            f"| {rate:,} | {portal_cores:.1f} | {portal_hosts} | {pg_cores:.1f} "
            f"| {pg_hosts} | {pg_hosts - 1} |"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=25_000_000)
    parser.add_argument("--per-naic", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=os.environ.get("OLV_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--workers", default="2,4", help="OLV_PORTAL_WORKERS values to run")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per portal run")
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--host-cores", type=int, default=4, help="cores per host (table)")
    parser.add_argument("--utilisation", type=float, default=0.6, help="of each core (table)")
    args = parser.parse_args()
    if not 0 < args.per_naic < 10_000_000:
        parser.error("--per-naic must be below 10,000,000 (the synthetic VINs' serials)")
    workers = [int(w) for w in args.workers.split(",") if w]

    busy = procstat.machine_busy()
    time.sleep(2)
    busy_before = procstat.busy_share(busy, procstat.machine_busy())
    calibration = procstat.calibration_ms()
    with tempfile.TemporaryDirectory(prefix="olv-scale-bench-") as tmp:
        workdir = Path(tmp)
        with fresh_database("postgresql", workdir, args.pg_url) as url:
            db.upgrade(url)
            print(f"loading {args.records:,} records ...", file=sys.stderr, flush=True)
            load, counts = load_book(url, workdir, args.records, args.per_naic)
            engine = db.make_engine(url)
            with engine.connect() as conn:
                size = conn.exec_driver_sql(
                    "SELECT pg_database_size(current_database())"
                ).scalar_one()
            engine.dispose()
            lookup = lookup_latency(url, counts, args.lookups)
            print(f"  look-up: {lookup}", file=sys.stderr, flush=True)
            portal = portal_runs(url, workdir, workers, args.duration)

    machine = ", ".join(f"{k} {v}" for k, v in procstat.machine_summary().items())
    print(f"\nscale bench, PostgreSQL; {machine}")
    print(
        f"cores busy before the run: {busy_before:.0%}; CPU calibration at the start "
        f"{calibration} ms; "
        f"database {size / 1e9:.1f} GB after the load\n"
    )
    print("| load | figure |")
    print("|---|---:|")
    print(f"| records | {load.records:,} in {load.files} files (one per NAIC) |")
    print(f"| load time (sum of `olv bob load`) | {load.seconds:.0f} s |")
    print(f"| records/s | {load.records / load.seconds:,.0f} |")
    print(f"| loader CPU | {load.loader_cpu:.0f} s |")
    print(
        f"| first file / its COPY floor | {load.first_seconds:.1f} s / {load.floor_seconds:.1f} s"
        f" = {load.floor_ratio:.1f}x |"
    )
    print(f"| whole load / (floor x files) | {load.total_floor_ratio:.1f}x |")
    print("\n| VIN look-up | p50 ms | p99 ms | PostgreSQL CPU ms |")
    print("|---|---:|---:|---:|")
    print(
        f"| `find_by_vins`, one VIN ({lookup['lookups']:,}, {lookup['hits']:,} hits) "
        f"| {lookup['p50_ms']} | {lookup['p99_ms']} | {lookup['pg_cpu_ms']} |"
    )
    print(f"| `find_by_vins`, 900 VINs at once | {lookup['batch_900_ms']} (total) | | |")
    for count, figures in portal.items():
        one = figures["one"]
        print(
            f"| portal `POST /api/v1/verify`, 1 client, {count} workers "
            f"| {one['p50_ms']} | {one['p99_ms']} | |"
        )
    print(
        "\n| portal workers | verifications/s | p50 ms | p99 ms | portal CPU ms | "
        "PostgreSQL CPU ms | verdicts |"
    )
    print("|---:|---:|---:|---:|---:|---:|---|")
    for count, figures in portal.items():
        many = figures["many"]
        print(
            f"| {count} | {many['rps']} | {many['p50_ms']} | {many['p99_ms']} "
            f"| {many['portal_cpu_ms_per_request']} | {many['pg_cpu_ms_per_request']} "
            f"| {many['verdicts']} |"
        )
    # The per-core figures: the costlier of the runs, each for itself (a capacity plan
    # should not rest on the best case of a shared machine).
    runs = [figures["many"] for figures in portal.values()]
    portal_ms = max(run["portal_cpu_ms_per_request"] for run in runs)
    pg_ms = max(run["pg_cpu_ms_per_request"] for run in runs)
    print(
        f"\ncapacity from {portal_ms} ms portal CPU and {pg_ms} ms PostgreSQL CPU per "
        f"verification (about {1000 / portal_ms:,.0f} and {1000 / max(pg_ms, 1e-3):,.0f} "
        f"verifications/s per core), {args.utilisation:.0%} of each core, "
        f"{args.host_cores}-core hosts, one spare of each:\n"
    )
    print("\n".join(capacity(portal_ms, pg_ms, args.host_cores, args.utilisation)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
