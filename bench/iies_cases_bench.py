"""Enforcement cases benchmark (SPEC §6, issue 14 part B), PostgreSQL: the "cases moved" part
of a 100,000-transaction day, on the data of ``bench/iies_bench.py``.

1. ``olv registrations import`` of ``--registrations`` rows and ``olv iies load`` of a day of
   ``--transactions`` insurer transactions (setup; ``bench/iies_bench.py`` measures these);
2. ``olv iies run`` on the cancellations' effective date: every matched transaction posted to its
   registration's timeline, a case opened for each cancellation without other coverage;
3. ``olv iies run`` ten days later: a first inquiry letter decided for each open case;
4. the same run again: the rerun of a date, which must change nothing;
5. ``olv iies letters`` for that date: the PDFs and ``mailing.csv``.

Each step is a subprocess; wall time, CPU time and peak RSS come from ``wait4``. Prints a
Markdown table for bench/RESULTS.md and the per-core rate.

    python bench/iies_cases_bench.py [--registrations 500000] [--transactions 100000] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import procstat
from iies_bench import timed, write_registrations, write_transactions
from scratch_db import DEFAULT_PG_URL, analyze, fresh_database, olv

XLC_DAY = "2026-11-20"  # the effective date iies_bench gives every cancellation
LETTER_DAY = "2026-11-30"  # ten days later: the grace is over


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registrations", type=int, default=500_000)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--pg-url", default=os.environ.get("OLV_TEST_PG_URL", DEFAULT_PG_URL))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iies-cases-bench-") as tmp:
        work = Path(tmp)
        registrations, transactions = work / "registrations.csv", work / "transactions.csv"
        write_registrations(registrations, args.registrations)
        write_transactions(transactions, args.transactions, args.registrations)
        with fresh_database("postgresql", work, args.pg_url) as url:
            env = os.environ | {"OLV_DATABASE_URL": url}
            olv("db", "upgrade", env=env)
            olv("registrations", "import", str(registrations), env=env)
            analyze(url)
            olv("iies", "load", str(transactions), env=env)
            analyze(url)
            calibration = procstat.calibration_ms()
            steps = [
                timed("run: post + open cases", args.transactions,
                      ["-m", "olv", "iies", "run", "--date", XLC_DAY], env),
                timed("run: first inquiry letters", args.transactions,
                      ["-m", "olv", "iies", "run", "--date", LETTER_DAY], env),
                timed("run again (changes nothing)", args.transactions,
                      ["-m", "olv", "iies", "run", "--date", LETTER_DAY], env),
            ]  # fmt: skip
            letters = json.loads(steps[1].output)["letters"]
            out = work / "letters"
            steps.append(
                timed("letters: PDFs + mailing.csv", letters,
                      ["-m", "olv", "iies", "letters", "--date", LETTER_DAY, "-o", str(out)], env)
            )  # fmt: skip
    print(f"\nCPU calibration {calibration} ms (procstat.calibration_ms, lower is faster); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
          f"{args.registrations:,} registrations\n")  # fmt: skip
    print("| step | rows | seconds | CPU s | rows per CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for s in steps:
        print(
            f"| {s.name} | {s.rows:,} | {s.seconds:.1f} | {s.cpu_seconds:.1f} | "
            f"{s.rows / max(s.cpu_seconds, 0.001):,.0f} | {s.rss_mb:.0f} |"
        )
    for s in steps:
        print(f"{s.name}: {s.output}", file=sys.stderr if s.name.startswith("letters") else None)
    print(f"\ntotal bench time {time.process_time():.0f} s of this process's CPU")


if __name__ == "__main__":
    main()
