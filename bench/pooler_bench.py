"""What transaction pooling costs the SOAP service's reads: direct versus through PgBouncer.

A private PostgreSQL (``initdb`` into a temporary directory) with a private PgBouncer in front
(the shipped ``deploy/pgbouncer/pgbouncer.ini``, transaction mode), 20,000 policies imported
with ``olv policies import``; then the service's own store (:class:`service.store
.SqlPolicyStore`, on an engine made as ``olv soap serve`` makes it) answers the same VIN
look-ups in rounds that alternate between three ways in:

- ``direct``: OLV's URL names PostgreSQL (psycopg prepares the reads; the statement timeout
  is a startup option);
- ``direct, not prepared``: the same URL with psycopg's preparing off — the floor for what the
  pooled way can be, with the server's planning per read and nothing else added;
- ``PgBouncer``: ``?pool_mode=transaction`` (nothing prepared; the timeout sent with each read);
- ``PgBouncer, no timeout``: the same without a statement timeout (an engine without
  ``wait_seconds``), to show what sending the timeout with each read costs.

CPU per read is this process's (``time.process_time``), PgBouncer's and the PostgreSQL
backends' (``/proc``), so the figures hold on a busy machine better than the wall clock, which
is printed too. The rounds alternate so that a change in the machine's load hits each way alike.

    python bench/pooler_bench.py [--reads 5000] [--rounds 4]

Needs the PostgreSQL server binaries and ``pgbouncer`` (as for the tests); as root both run as
the ``postgres`` user.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from procstat import machine_summary  # noqa: E402

from olv import db  # noqa: E402
from service.store import SqlPolicyStore  # noqa: E402
from tests.helpers.pgbouncer import private_pgbouncer  # noqa: E402
from tests.helpers.private_pg import _children, private_postgres  # noqa: E402

NAIC = "10001"
DEADLINE = 4.5  # OLV_DEADLINE_SECONDS default: the engine's statement timeout


def _ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _policies(path: Path, count: int) -> list[str]:
    vins = [f"1BENCH{i:011d}" for i in range(count)]
    rows = [
        "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review"
    ]
    rows += [f"{NAIC},P-{i},VS,{vin},2026-01-01,2027-01-01,," for i, vin in enumerate(vins)]
    path.write_text("\n".join(rows) + "\n")
    return vins


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=5000, help="reads per way and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--policies", type=int, default=20_000)
    args = parser.parse_args()
    hz = os.sysconf("SC_CLK_TCK")
    with private_postgres() as pg, private_pgbouncer(pg.port) as bouncer:
        with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE olv")
        direct_url = pg.url.rsplit("/", 1)[0] + "/olv"
        env = {**os.environ, "OLV_DATABASE_URL": direct_url}
        csv = Path(bouncer.home) / "policies.csv"
        vins = _policies(csv, args.policies)
        for command in (["db", "upgrade"], ["policies", "import", str(csv)]):
            subprocess.run([sys.executable, "-m", "olv", *command], env=env, check=True)
        ways: dict[str, SqlPolicyStore] = {}
        for name, url, wait, kwargs in (
            ("direct", direct_url, DEADLINE, {}),
            ("direct, not prepared", direct_url, DEADLINE, {"prepare_threshold": None}),
            ("PgBouncer", bouncer.url("olv"), DEADLINE, {}),
            ("PgBouncer, no timeout", bouncer.url("olv"), None, {}),
        ):
            engine = db.make_engine(url, wait_seconds=wait, connect_args=kwargs)
            ways[name] = SqlPolicyStore(engine)
        servers = lambda: _children(pg.process.pid)  # noqa: E731 - backends come and go
        bouncer_pid = [bouncer.process.pid] if bouncer.process else []
        figures: dict[str, dict[str, list[float]]] = {
            n: {"client": [], "bouncer": [], "server": [], "wall": []} for n in ways
        }
        rng = random.Random(7)
        for store in ways.values():  # connect and warm up (psycopg prepares after 5)
            for vin in vins[:50]:
                assert store.vin_periods(NAIC, vin)
        for _ in range(args.rounds):
            for name, store in ways.items():
                sample = [rng.choice(vins) for _ in range(args.reads)]
                cpu0, wall0 = time.process_time(), time.perf_counter()
                b0, s0 = _ticks(bouncer_pid), _ticks(servers())
                for vin in sample:
                    store.vin_periods(NAIC, vin)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                b1, s1 = _ticks(bouncer_pid), _ticks(servers())
                per = 1e6 / args.reads
                figures[name]["client"].append(cpu * per)
                figures[name]["bouncer"].append(
                    (b1 - b0) / hz * per if "PgBouncer" in name else 0.0
                )
                figures[name]["server"].append((s1 - s0) / hz * per)
                figures[name]["wall"].append(wall * per)
        for store in ways.values():
            store.close()
            store.engine.dispose()
    print(f"machine: {machine_summary()}; load average {os.getloadavg()[0]:.1f}")
    print(f"{args.rounds} rounds of {args.reads} VIN look-ups per way; medians per read (µs)")
    head = ("client CPU", "PgBouncer", "PostgreSQL", "all CPU", "wall")
    print(f"{'way':24} " + " ".join(f"{h:>10}" for h in head))
    floor = None
    for name, f in figures.items():
        med = {k: statistics.median(v) for k, v in f.items()}
        total = med["client"] + med["bouncer"] + med["server"]
        floor = floor or total
        print(
            f"{name:24} {med['client']:10.0f} {med['bouncer']:10.0f} {med['server']:10.0f} "
            f"{total:10.0f} {med['wall']:10.0f}   ×{total / floor:.2f} of direct CPU"
        )


if __name__ == "__main__":
    main()
