"""Enforcement benchmark (SPEC §4 and §6), PostgreSQL, one command for the whole day:

1. ``olv registrations import`` of ``--registrations`` rows (default 2,000,000) with every
   registrant column, into a fresh database;
2. a day of ``--transactions`` insurer transactions (default 100,000; NBS and XLC matching by
   plate, DL number, name and DOB, some resolved, some unmatched, some edit errors) through
   ``olv iies load``: read, edited, matched, sequence-checked and stored;
3. ``olv iies run`` on the cancellations' effective date: the daily NBS re-matching, every
   matched transaction posted to its registration's timeline, a case opened for each
   cancellation without other coverage (the "cases moved" of the day);
4. ``olv iies run`` ten days later (a first inquiry letter decided per open case) and the same
   run again (a rerun of a date, which must change nothing);
5. with ``--letters``: ``olv iies letters`` for that day (the PDFs and ``mailing.csv``).

Each step runs as a subprocess (as operators run it); its wall time, its own CPU time and peak
RSS come from ``wait4``, and the CPU of the PostgreSQL backends serving it from /proc (polled
while it runs). The floor, measured in the same run: PostgreSQL ``COPY`` of the same rows into
an unindexed table. Prints a Markdown table for bench/RESULTS.md, the ratios to the floor, the
targets (import <= 180 s; load + run <= 60 s; RSS <= 500 MB), the per-core rate and the
projection to 10,000,000 registrations.

    python bench/iies_bench.py [--registrations 2000000] [--transactions 100000] [--letters]
                               [--data DIR] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import procstat
from scratch_db import DEFAULT_PG_URL, analyze, database_name, fresh_database, olv
from sqlalchemy import create_engine

from enforcement import registrations
from enforcement.edits import HEADER
from olv.vin import with_check_digit

REG_COLUMNS = [*registrations.REQUIRED, *registrations.OPTIONAL]
NAMES = ["SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "LOPEZ"]
FIRST = ["JOHN", "MARY", "ROBERT", "PATRICIA", "MICHAEL", "LINDA", "DAVID", "SUSAN"]
TARGETS = {"registrations": 180.0, "transactions": 60.0}
TARGET_RSS_MB = 500.0
BORN = date(1940, 1, 1)
NAIC = "12345"


WMI = ("1HGCM8", "2T1BUR", "5YJSA1", "1FTFW1", "3VWFE2", "JN1AZ4", "WBAPH5")


def vin(i: int) -> str:
    """Distinct VINs that differ in most places (as real ones of one name key do)."""
    return with_check_digit(f"{WMI[i % 7]}{(i * 7_919_317) % 10**11:011d}")


def plate(i: int) -> str:
    return f"P{i:07d}"


def letters(n: int) -> str:
    """``n`` in base 26 as letters: names stay letters only and (nearly) unique."""
    out = ""
    while True:
        n, digit = divmod(n, 26)
        out = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[digit] + out
        if not n:
            return out


def person(i: int) -> tuple[str, str, str, str]:
    last = NAMES[i % 9] + letters(i // 9)
    # DOBs spread over 60 years independently of the name parts, so that the 5/3/1 + DOB
    # key names a handful of registrations, as it does with real people
    dob = BORN + timedelta(days=(i * 7_919) % 21_900)
    return last, FIRST[i % 8], "ABCDEFGH"[i % 8], dob.isoformat()


def write_registrations(path: Path, rows: int) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(REG_COLUMNS)
        for i in range(rows):
            last, first, middle, dob = person(i)
            writer.writerow(
                [plate(i), "NY", vin(i), "PAS", "1", last, first, middle, dob,
                 f"{i:09d}", "", f"{12000 + i % 900:05d}", f"{i} MAIN ST", "", "ALBANY",
                 "2025-03-01", "2027-02-28", "active"]
            )  # fmt: skip


def write_transactions(path: Path, rows: int, registrations: int) -> None:
    rng = random.Random(14)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(rows):
            i = rng.randrange(registrations)
            last, first, middle, dob = person(i)
            kind = "XLC" if n % 4 == 3 else "NBS"
            values = {
                "txn_id": f"B{n:08d}", "type": kind, "naic": NAIC,
                "effective_date": "2026-11-01" if kind == "NBS" else "2026-11-20",
                "policy_number": f"POL{i}", "policy_type": "1", "entity_type": "1",
                "last_name": last, "first_name": first, "middle_name": middle, "dob": dob,
                "dl_number": "", "fein": "", "zip": "", "vin": vin(i), "plate": "",
                "vehicle_year": "2015", "make": "HONDA", "tracking_number": "",
            }  # fmt: skip
            share = n % 20
            if share < 6:
                values["plate"] = plate(i)  # H1
            elif share < 8:
                values["dl_number"] = f"{i:09d}"  # H2
            elif share == 17:
                values["vin"] = with_check_digit(f"9ZZZZ9{i:011d}")  # U
            elif share == 18:
                values["vin"] = "UNKNOWN"  # E
            elif share == 19:
                v = vin(i)
                values["vin"] = with_check_digit(v[:12] + str((int(v[12]) + 1) % 10) + v[13:])  # R
            writer.writerow([values[h] for h in HEADER])


@dataclass
class Step:
    name: str
    rows: int
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float
    rss_mb: float
    floor_seconds: float | None
    output: str


def timed(name: str, rows: int, args: list[str], env: dict[str, str], database: str) -> Step:
    """Run one step; its wall, CPU, peak RSS, and its database backends' CPU (polled: a
    backend ends with the step, so /proc must be read while it runs)."""
    started = time.perf_counter()
    before = set(procstat.database_backends(database))
    proc = subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    backends: dict[int, float] = {}
    while True:
        for pid in procstat.database_backends(database):
            if pid not in before:
                backends[pid] = procstat.cpu_seconds([pid])
        done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    out = proc.stdout.read().decode().strip() if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        sys.exit(f"{name} failed: {out}\n{err}")
    cpu = usage.ru_utime + usage.ru_stime
    step = Step(name, rows, seconds, cpu, sum(backends.values()), usage.ru_maxrss / 1024, None, out)
    print(step, file=sys.stderr, flush=True)
    return step


def copy_floor(url: str, path: Path, table: str, columns: list[str]) -> float:
    """Seconds for COPY of the CSV's rows into an unindexed table of text columns."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(f"CREATE TABLE {table} ({', '.join(f'{c} text' for c in columns)})")
    started = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        with (
            cursor.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
            path.open("rb") as data,
        ):
            while chunk := data.read(1 << 20):
                copy.write(chunk)
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()
    return seconds


XLC_DAY = "2026-11-20"  # the effective date write_transactions gives every cancellation
LETTER_DAY = "2026-11-30"  # ten days later: the grace is over


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=2_000_000)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--letters", action="store_true", help="also render the day's letters")
    parser.add_argument("--pg-url", default=os.environ.get("OLV_TEST_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--data", type=Path, help="keep (and reuse) the generated files here")
    args = parser.parse_args()
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="iies-bench-") as tmp:
        work = Path(tmp)
        data = args.data or work
        data.mkdir(parents=True, exist_ok=True)
        registrations = data / f"registrations-{args.registrations}.csv"
        transactions = data / f"transactions-{args.transactions}-{args.registrations}.csv"
        started = time.perf_counter()
        if not registrations.exists():
            write_registrations(registrations, args.registrations)
        if not transactions.exists():
            write_transactions(transactions, args.transactions, args.registrations)
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        with fresh_database("postgresql", work, args.pg_url) as url:
            env = os.environ | {"OLV_DATABASE_URL": url}
            database = database_name(url)
            olv("db", "upgrade", env=env)
            calibration = procstat.calibration_ms()

            def step(name: str, rows: int, *command: str) -> Step:
                done = timed(name, rows, list(command), env, database)
                loads.append(os.getloadavg()[0])
                return done

            n, t = args.registrations, args.transactions
            imported = step("registrations import", n,
                            "-m", "olv", "registrations", "import", str(registrations))  # fmt: skip
            imported.floor_seconds = copy_floor(url, registrations, "floor_reg", REG_COLUMNS)
            analyze(url)
            loaded = step("transactions load + edit + match", t,
                          "-m", "olv", "iies", "load", str(transactions))  # fmt: skip
            loaded.floor_seconds = copy_floor(url, transactions, "floor_txn", list(HEADER))
            analyze(url)
            posted = step("run: re-match, post, open cases", t,
                          "-m", "olv", "iies", "run", "--date", XLC_DAY)  # fmt: skip
            lettered = step("run +10 days: first inquiry letters", t,
                            "-m", "olv", "iies", "run", "--date", LETTER_DAY)  # fmt: skip
            again = step("run again (changes nothing)", t,
                         "-m", "olv", "iies", "run", "--date", LETTER_DAY)  # fmt: skip
            steps = [imported, loaded, posted, lettered, again]
            if args.letters:
                count = json.loads(lettered.output)["letters"]
                out = str(work / "letters")
                steps.append(step("letters: PDFs + mailing.csv", count, "-m", "olv", "iies",
                                  "letters", "--date", LETTER_DAY, "-o", out))  # fmt: skip
    report(args, steps, calibration, loads)


def report(
    args: argparse.Namespace, steps: list[Step], calibration: float, loads: list[float]
) -> None:
    imported, loaded, posted, lettered, again = steps[:5]
    print(f"\ncode {procstat.code_revision()}; CPU calibration {calibration} ms "
          f"(procstat.calibration_ms, lower is faster); load average {min(loads):.1f}-"
          f"{max(loads):.1f} on {os.cpu_count()} cores during the run\n")  # fmt: skip
    print("| step | rows | wall s | client CPU s | PostgreSQL CPU s | peak RSS MB | COPY floor s |")
    print("|---|---|---|---|---|---|---|")
    for s in steps:
        floor = f"{s.floor_seconds:.1f}" if s.floor_seconds is not None else "–"
        print(f"| {s.name} | {s.rows:,} | {s.seconds:.1f} | {s.cpu_seconds:.1f} | "
              f"{s.server_cpu_seconds:.1f} | {s.rss_mb:.0f} | {floor} |")  # fmt: skip
    day = [loaded, posted]
    day_wall = sum(s.seconds for s in day)
    day_cpu = sum(s.cpu_seconds + s.server_cpu_seconds for s in day)
    imp_cpu = imported.cpu_seconds + imported.server_cpu_seconds
    rss = max(s.rss_mb for s in steps)
    assert imported.floor_seconds is not None
    print()
    floor = imported.floor_seconds
    print(f"- import: {imported.seconds:.0f} s wall (target {TARGETS['registrations']:.0f} s), "
          f"{imp_cpu:.0f} CPU s (client + PostgreSQL); {imported.seconds / floor:.1f}x the COPY "
          f"floor of {floor:.1f} s")  # fmt: skip
    print(
        f"- the day (load + edit + match + run): {day_wall:.0f} s wall (target "
        f"{TARGETS['transactions']:.0f} s), {day_cpu:.0f} CPU s (client + PostgreSQL)"
    )
    print(f"- peak RSS {rss:.0f} MB (target {TARGET_RSS_MB:.0f} MB)")
    per_core = imported.rows / imp_cpu
    print(f"- per core: {per_core:,.0f} registrations imported per CPU second, "
          f"{args.transactions / day_cpu:,.0f} transactions of a day per CPU second")  # fmt: skip
    ten_m = 1e7 / imported.rows
    print(f"- 10,000,000 registrations: {imported.seconds * ten_m / 60:.1f} min wall at this run's "
          f"rate, {imp_cpu * ten_m / 60:.1f} min of CPU ({imp_cpu * ten_m / 120:.1f} min on 2 "
          f"idle cores)")  # fmt: skip
    print(f"\nacknowledgement: {loaded.output}")
    for s in steps[2:]:
        print(f"{s.name}: {s.output}")


if __name__ == "__main__":
    main()
