"""Crash safety of ``olv bob load`` (SPEC §2): SIGKILL at any moment leaves the old master or
the new one, never a mix, and the rerun loads cleanly.

The loader runs as a real subprocess on a 120,000-record file (about 36 MB). ``OLV_BOB_TEST_PAUSE_BEFORE_COMMIT``
(a test hook) holds the swap transaction open just before its commit, so one kill lands inside
the swap for certain; the others land while records stream in, or wherever the timing falls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from bob_loader import synth
from bob_loader.load import load_files
from bob_loader.lookup import find_by_vins, naic_stats
from bob_loader.models import BobCurrent, BobFile, BobRecord
from olv import db

OLV = str(Path(sys.executable).with_name("olv"))
NAIC = "31337"
OLD_COUNT, NEW_COUNT = 3_000, 120_000
MARKER = "pausing before the swap commit"


@pytest.fixture(scope="module")
def new_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "New 20261201.txt"
    synth.write_file(path, synth.records(NAIC, NEW_COUNT, series=1))
    return path


def start(path: Path, pause: float = 0) -> subprocess.Popen[str]:
    env = os.environ | {"OLV_BOB_TEST_PAUSE_BEFORE_COMMIT": str(pause)}
    return subprocess.Popen(
        [OLV, "bob", "load", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def master(engine: Engine) -> tuple[str, int]:
    """(file, records) of the NAIC's master, after checking it is one whole generation."""
    with engine.connect() as conn:
        [stats] = [s for s in naic_stats(conn) if s["naic"] == NAIC]
        current = select(BobCurrent.file_id).where(BobCurrent.naic == NAIC).scalar_subquery()
        visible = conn.scalar(
            select(func.count()).where(BobRecord.naic == NAIC, BobRecord.file_id == current)
        )
        old_sample = [synth.make_vin(NAIC, i, 0) for i in range(0, OLD_COUNT, 7)]
        new_sample = [synth.make_vin(NAIC, i, 1) for i in range(0, NEW_COUNT, 97)]
        old_hits = sum(1 for _ in find_by_vins(conn, old_sample))
        new_hits = sum(1 for _ in find_by_vins(conn, new_sample))
    assert visible == stats["records"]
    if stats["file"].startswith("Old"):
        assert (visible, old_hits, new_hits) == (OLD_COUNT, len(old_sample), 0)
    else:
        assert (visible, old_hits, new_hits) == (NEW_COUNT, 0, len(new_sample))
    return stats["file"], stats["records"]


OLD = ("Old 20261101.txt", OLD_COUNT)
NEW = ("New 20261201.txt", NEW_COUNT)


def test_sigkill_at_any_moment_leaves_old_or_new_master(db_url: str, tmp_path: Path, new_file):
    engine = db.make_engine(db_url)
    old = tmp_path / OLD[0]
    synth.write_file(old, synth.records(NAIC, OLD_COUNT))
    assert load_files(engine, [old])[0].status == "accepted"
    assert master(engine) == OLD

    # 1. Inside the swap: every record written, pointer moved, commit not yet done.
    began = time.monotonic()
    proc = start(new_file, pause=60)
    assert proc.stderr is not None
    for line in proc.stderr:
        if MARKER in line:
            break
    else:
        pytest.fail(f"the loader never reached the swap: {proc.communicate()}")
    to_swap = time.monotonic() - began
    kill(proc)
    assert master(engine) == OLD
    with engine.connect() as conn:  # the killed load's file row is left "loading" ...
        status = select(BobFile.status).where(BobFile.name == NEW[0])
        assert conn.scalar(status) == "loading"

    # 2. While records stream in, and 3. late, possibly after the commit.
    for delay in (0.3 * to_swap, 0.97 * to_swap):
        proc = start(new_file)
        time.sleep(delay)
        kill(proc)
        assert master(engine) in (OLD, NEW)

    # ... and blocks nothing: the rerun loads (or finds its commit went through).
    rerun = subprocess.run([OLV, "bob", "load", str(new_file)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.split(";")[0] in (f"{NEW[0]}: accepted", f"{NEW[0]}: duplicate")
    assert master(engine) == NEW
    with engine.connect() as conn:  # no generation but the current one is left behind
        assert conn.scalar(select(func.count()).where(BobRecord.naic == NAIC)) == NEW_COUNT
        assert conn.scalar(select(func.count()).where(BobFile.status == "loading")) == 0
    engine.dispose()


def test_two_concurrent_deliveries_of_one_file_load_it_once(db_url: str, tmp_path: Path):
    path = tmp_path / "Twice 20261201.txt"
    synth.write_file(path, synth.records(NAIC, 30_000))
    procs = [start(path) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    statuses = sorted(out.split(";")[0].split(": ")[1] for out, _ in results)
    assert statuses == ["accepted", "duplicate"]
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).where(BobRecord.naic == NAIC)) == 30_000
    engine.dispose()
