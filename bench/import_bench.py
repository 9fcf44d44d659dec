"""Policy import benchmark (issue: memory must not grow with the file): ``olv policies import``
of 1,000,000 and 5,000,000 CSV rows, one policy per row (the worst case for memory), on SQLite
and PostgreSQL, timed as a subprocess with its peak RSS read from ``wait4``.

Each size is imported twice into a fresh database: into the empty store, then again (every
policy's rows replaced: the monthly case). Target: peak RSS <= 300 MB at any size.

    python bench/import_bench.py [--rows 1000000 5000000] [--pg-url postgresql+psycopg://…]
                                 [--no-pg] [--no-sqlite]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bob_bench import DEFAULT_PG, drop_pg, fresh_pg

from bob_loader import synth
from olv import db

NAIC = "12345"
TARGET_RSS_MB = 300.0
OLV = str(Path(sys.executable).with_name("olv"))
HEADER = (
    "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review\n"
)


@dataclass
class Run:
    database: str
    rows: int
    case: str
    seconds: float
    rss_mb: float


def generate(path: Path, rows: int) -> Path:
    started = time.perf_counter()
    with path.open("w") as out:
        out.write(HEADER)
        for i in range(rows):
            flag = "true" if i % 97 == 0 else ""
            out.write(
                f"{NAIC},POL-{i:09d},VS,{synth.make_vin(NAIC, i)},2026-01-01,2027-01-01,,{flag}\n"
            )
    print(
        f"generated {path.name}: {rows:,} rows, {path.stat().st_size / 1e6:.0f} MB "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return path


def timed_import(url: str, path: Path, database: str, rows: int, case: str) -> Run:
    env = os.environ | {"OLV_DATABASE_URL": url}
    log = path.with_suffix(".log")
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [OLV, "policies", "import", str(path)], env=env, stdout=out, stderr=out
        )
        _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child only
    seconds = time.perf_counter() - started
    text = log.read_text()[-2000:]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"import failed on {database}: {text}")
    run = Run(database, rows, case, seconds, usage.ru_maxrss / 1024)
    # Each figure as soon as it exists: a long run that fails later keeps what it measured.
    print(
        f"{database} {rows:,} {case}: {seconds:.1f} s, peak RSS {run.rss_mb:.0f} MB"
        f" ({text.strip()})",
        file=sys.stderr,
        flush=True,
    )
    return run


def run_one(url: str, path: Path, database: str, rows: int) -> list[Run]:
    return [
        timed_import(url, path, database, rows, "empty store"),
        timed_import(url, path, database, rows, "re-import (replace all)"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()

    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="olv-import-bench-") as tmp:
        directory = Path(tmp)
        for rows in args.rows:
            path = generate(directory / f"policies-{rows}.csv", rows)
            if not args.no_sqlite:
                sqlite_url = f"sqlite:///{directory / 'bench.db'}"
                db.upgrade(sqlite_url)
                runs += run_one(sqlite_url, path, "sqlite", rows)
                (directory / "bench.db").unlink()
            if not args.no_pg:
                name, pg_url = fresh_pg(args.pg_url)
                try:
                    db.upgrade(pg_url)
                    runs += run_one(pg_url, path, "postgresql", rows)
                finally:
                    drop_pg(args.pg_url, name)
            path.unlink()

    print("\n| database | rows | case | seconds | peak RSS MB |")
    print("|---|---:|---|---:|---:|")
    for run in runs:
        print(
            f"| {run.database} | {run.rows:,} | {run.case} | {run.seconds:.1f} | {run.rss_mb:.0f} |"
        )
    worst = max((r.rss_mb for r in runs), default=0.0)
    verdict = "met" if worst <= TARGET_RSS_MB else "MISSED"
    print(
        f"\ntarget: peak RSS <= {TARGET_RSS_MB:.0f} MB at any size; worst {worst:.0f} MB: {verdict}"
    )


if __name__ == "__main__":
    main()
