"""Intake pickup while a large file loads (SPEC §2: a completed upload is picked up within 30 s).

Starts ``olv bob watch`` as a subprocess with the default poll and stability settings, drops a
1,000,000-record file into account ``big``'s inbox, and while it loads drops a small file into
account ``small``'s inbox every few seconds. Pickup is the moment a file leaves its inbox; the
bench prints each small file's pickup time and the worst one, and the big file's total time.

    python bench/intake_bench.py [--records 1000000] [--pg-url postgresql+psycopg://… | --sqlite]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bob_bench import DEFAULT_PG, drop_pg, fresh_pg

from bob_loader import synth
from olv import db

TARGET_SECONDS = 30.0
OLV = str(Path(sys.executable).with_name("olv"))


def upload(path: Path, inbox: Path) -> Path:
    """As an SFTP client does: written elsewhere, renamed into the inbox when complete."""
    target = inbox / path.name
    os.rename(path, target)
    return target


def archived(account: Path) -> bool:
    archive = account / "archive"
    return archive.exists() and any(not p.name.startswith(".") for p in archive.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between small files")
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="olv-intake-bench-") as tmp:
        directory = Path(tmp)
        staging = directory / "staging"
        staging.mkdir()
        base = directory / "intake"
        for account in ("big", "small"):
            (base / account / "inbox").mkdir(parents=True)
        big = staging / "Big 20261101.txt"
        synth.write_file(big, synth.records("11111", args.records))
        pg_name = None
        if args.sqlite:
            url = f"sqlite:///{directory / 'bench.db'}"
        else:
            pg_name, url = fresh_pg(args.pg_url)
        try:
            db.upgrade(url)
            log = (directory / "watch.log").open("wb")
            env = os.environ | {"OLV_DATABASE_URL": url}
            watcher = subprocess.Popen([OLV, "bob", "watch", str(base)], env=env, stderr=log)
            started = time.monotonic()
            upload(big, base / "big" / "inbox")
            pickups: list[float] = []
            serial = 0
            while not archived(base / "big"):
                serial += 1
                small = staging / f"Small {serial:04d}.txt"
                synth.write_file(small, synth.records(f"2{serial:04d}", 10, series=serial))
                dropped = time.monotonic()
                inbox_file = upload(small, base / "small" / "inbox")
                while inbox_file.exists():
                    time.sleep(0.1)
                pickups.append(time.monotonic() - dropped)
                print(f"small file {serial}: picked up after {pickups[-1]:.1f} s", file=sys.stderr)
                time.sleep(args.every)
                if time.monotonic() - started > 1800:
                    raise SystemExit("the big file took more than 30 minutes")
            big_seconds = time.monotonic() - started
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(120)
        finally:
            if pg_name is not None:
                drop_pg(args.pg_url, pg_name)

    worst = max(pickups, default=0.0)
    database = "sqlite" if args.sqlite else "postgresql"
    print(f"\n{database}: {args.records:,}-record file loaded and archived in {big_seconds:.0f} s")
    print(f"{len(pickups)} small files dropped meanwhile; pickup worst {worst:.1f} s")
    verdict = "met" if worst <= TARGET_SECONDS else "MISSED"
    print(f"target: pickup <= {TARGET_SECONDS:.0f} s for every account: {verdict}")


if __name__ == "__main__":
    main()
