"""Book-of-business loader benchmark (SPEC §4): 1,000,000 records, SQLite and PostgreSQL.

Generates valid synthetic files into a temporary directory, then times ``olv bob load`` as a
subprocess (the way operators run it) on a fresh, migrated database of each kind, and reads
the loader's peak RSS from ``wait4``. Two loads per database: the first into an empty store,
the second replacing that master with a new generation (the monthly case, which also deletes
the old rows). The floor is PostgreSQL ``COPY`` of the same rows into a plain table without
indexes.

    python bench/bob_bench.py [--records 1000000] [--pg-url postgresql+psycopg://…] [--no-pg]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bob_loader import synth
from bob_loader.bulk import COLUMNS, PostgresWriter
from olv import db
from olv.bob.parser import read_bob

NAIC = "12345"
TARGET_SECONDS = {"sqlite": 60.0, "postgresql": 90.0}
TARGET_RSS_MB = 300.0
DEFAULT_PG = os.environ.get("OLV_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
OLV = str(Path(sys.executable).with_name("olv"))


@dataclass
class Run:
    database: str
    case: str
    seconds: float
    rss_mb: float
    summary: str


def generate(directory: Path, records: int, series: int) -> Path:
    path = directory / f"Bench{series} 2026110{series + 1}.txt"
    started = time.perf_counter()
    synth.write_file(path, synth.records(NAIC, records, series=series))
    size = path.stat().st_size / 1e6
    print(
        f"generated {path.name}: {records:,} records, {size:.0f} MB "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return path


def timed_load(url: str, path: Path, database: str, case: str) -> Run:
    env = os.environ | {"OLV_DATABASE_URL": url}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [OLV, "bob", "load", str(path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of this child only
    seconds = time.perf_counter() - started
    summary = proc.stdout.read().decode().strip() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"load failed on {database}: {summary}")
    return Run(database, case, seconds, usage.ru_maxrss / 1024, summary)


def copy_floor(url: str, path: Path) -> float:
    """Seconds for PostgreSQL COPY of the file's rows into an unindexed table."""
    tsv = path.with_suffix(".tsv")
    with tsv.open("w") as out:  # untimed: the rows exactly as the loader sends them
        for parsed in read_bob(path):
            assert parsed.record is not None
            row = PostgresWriter.row(1, parsed.record)
            out.write("\t".join(r"\N" if v is None else str(v) for v in row) + "\n")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS bob_copy_floor")
        conn.exec_driver_sql(
            "CREATE TABLE bob_copy_floor (file_id integer, line integer, naic varchar(5), "
            "policy_type varchar(2), policy_number varchar(30), policy_key varchar(30), "
            "vin varchar(25), effective_date date, expiration_date date, commercial boolean)"
        )
    started = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        with (
            cursor.copy(f"COPY bob_copy_floor ({', '.join(COLUMNS)}) FROM STDIN") as copy,
            tsv.open("rb") as data,
        ):
            while chunk := data.read(1 << 20):
                copy.write(chunk)
    seconds = time.perf_counter() - started
    engine.dispose()
    tsv.unlink()
    return seconds


def fresh_pg(admin_url: str) -> tuple[str, str]:
    name = f"olv_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()

    runs: list[Run] = []
    floor: float | None = None
    with tempfile.TemporaryDirectory(prefix="olv-bob-bench-") as tmp:
        directory = Path(tmp)
        first = generate(directory, args.records, series=0)
        second = generate(directory, args.records, series=1)

        sqlite_url = f"sqlite:///{directory / 'bench.db'}"
        db.upgrade(sqlite_url)
        runs.append(timed_load(sqlite_url, first, "sqlite", "empty store"))
        runs.append(timed_load(sqlite_url, second, "sqlite", "replace master"))
        (directory / "bench.db").unlink()

        if not args.no_pg:
            name, pg_url = fresh_pg(args.pg_url)
            try:
                db.upgrade(pg_url)
                runs.append(timed_load(pg_url, first, "postgresql", "empty store"))
                runs.append(timed_load(pg_url, second, "postgresql", "replace master"))
                floor = copy_floor(pg_url, first)
            finally:
                drop_pg(args.pg_url, name)

    print(f"\n{args.records:,} records per file\n")
    print("| database | case | seconds | target | peak RSS MB | x COPY floor |")
    print("|---|---|---:|---:|---:|---:|")
    for run in runs:
        ratio = f"{run.seconds / floor:.1f}" if floor else "-"
        print(
            f"| {run.database} | {run.case} | {run.seconds:.1f} | "
            f"{TARGET_SECONDS[run.database]:.0f} | {run.rss_mb:.0f} | {ratio} |"
        )
    if floor:
        print(f"| postgresql | COPY floor (plain table, no indexes) | {floor:.1f} | | | 1.0 |")
    misses = [r for r in runs if r.seconds > TARGET_SECONDS[r.database] or r.rss_mb > TARGET_RSS_MB]
    print(
        f"\ntargets: <= 60 s SQLite, <= 90 s PostgreSQL, <= {TARGET_RSS_MB:.0f} MB peak; "
        f"{'all met' if not misses else f'{len(misses)} missed'}"
    )


if __name__ == "__main__":
    main()
