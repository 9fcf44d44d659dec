"""Two ``olv iies run`` at once on one database (the timer enabled on several state hosts): one
works, the other waits for it and then finds the day done; a run that dies lets the next one in.
A proof (``olv iies proof``) posted while a run works waits for it too. SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from enforcement import proof as proof_module
from enforcement import run as run_module
from enforcement.case_settings import CaseSettings
from enforcement.models import Activity, CoveragePeriod, Letter, MvfRequest
from enforcement.models import Case as CaseRow
from enforcement.run import RunBusy, RunLockLost, exclusive, run
from olv import db
from olv.cli import run as olv_run
from tests.helpers.iies_cases import activities, add_registrant, add_txn

D0 = date(2026, 3, 2)
DAY = D0 + timedelta(days=10)  # past the grace: a run opens each case and sends its letter
SETTINGS = CaseSettings()
REPO = Path(__file__).resolve().parents[1]
REGISTRATIONS = 12
BATCH = 4  # several batches a run, so that two runs would interleave


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


def seed(engine: Engine, n: int = REGISTRATIONS) -> list[int]:
    """Registrations whose insurer cancelled on D0: each gets a case (XLC) and a first inquiry
    letter (LTF) from a run on DAY."""
    regs = [add_registrant(engine, f"LK{i:03d}", f"1HGCM82633A{i:06d}") for i in range(n)]
    for reg in regs:
        add_txn(engine, reg, "XLC", "11111", D0)
    return regs


def count(engine: Engine, model: type) -> int:
    with db.transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def assert_done_once(engine: Engine, regs: list[int]) -> None:
    """One case, one XLC entry and one letter per registration: nothing decided twice."""
    assert count(engine, CaseRow) == len(regs)
    assert count(engine, Letter) == len(regs)
    with db.transaction(engine) as session:
        per_reg = session.execute(
            select(Letter.registration_id, func.count()).group_by(Letter.registration_id)
        ).all()
    assert sorted(per_reg) == [(reg, 1) for reg in sorted(regs)]
    for reg in regs:
        assert [a[0] for a in activities(engine, reg)] == ["XLC", "LTF"]


def changed(summary: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in summary.items() if k != "date" and v}


def test_iies_two_runs_at_once_decide_each_case_once(
    db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    regs = seed(engine)
    # Make the race certain: a run that has read its first batch waits (briefly) for the other
    # to have read it too. Without a lock both read before either writes; with the lock the
    # other is still waiting for its turn, and the first goes on alone after the timeout.
    meeting = threading.Barrier(2)
    real_load = run_module.load_records

    def load_and_meet(*args: Any, **kwargs: Any) -> Any:
        records = real_load(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            meeting.wait(timeout=1.5)
        return records

    monkeypatch.setattr(run_module, "load_records", load_and_meet)
    start = threading.Barrier(2)
    summaries: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    def one_run() -> None:
        own = db.make_engine(db_url)  # as a second host would: its own connections
        try:
            start.wait(timeout=10)
            summaries.append(run(own, DAY, SETTINGS, batch=BATCH))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)
        finally:
            own.dispose()

    caplog.set_level(logging.INFO, logger="enforcement.run")
    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert len(summaries) == 2
    worked, waited = sorted(summaries, key=lambda s: s["letters"], reverse=True)
    assert worked["cases_opened"] == REGISTRATIONS and worked["letters"] == REGISTRATIONS
    assert changed(waited) == {}  # the second found the day done
    assert any("waiting" in r.getMessage() for r in caplog.records)
    assert_done_once(engine, regs)


def _olv(db_url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OLV_DATABASE_URL": db_url}
    return subprocess.Popen(
        [sys.executable, "-m", "olv", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_iies_two_cli_runs_at_once_both_exit_0_and_letters_are_sent_once(
    db_url: str, engine: Engine
) -> None:
    regs = seed(engine)
    procs = [_olv(db_url, "iies", "run", "--date", DAY.isoformat()) for _ in range(2)]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    for _out, err, code in results:
        assert code == 0, err
    summaries = sorted((json.loads(out) for out, _, _ in results), key=lambda s: -s["letters"])
    assert summaries[0]["letters"] == REGISTRATIONS
    assert changed(summaries[1]) == {}
    assert_done_once(engine, regs)


class StderrWatch:
    """Reads a command's stderr on a thread: its lines, and whether it said it waits."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self.told_waiting = threading.Event()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)
            if "waiting" in line:
                self.told_waiting.set()

    def text(self) -> str:
        return "".join(self.lines)


def test_iies_run_while_another_works_waits_then_finds_the_day_done(
    db_url: str, engine: Engine
) -> None:
    regs = seed(engine)
    second: list[subprocess.Popen[str]] = []
    watches: list[StderrWatch] = []

    def start_second(number: int) -> None:
        if number == 0:  # the first run is working: an operator (or another host) starts one
            proc = _olv(db_url, "iies", "run", "--date", DAY.isoformat())
            second.append(proc)
            watches.append(StderrWatch(proc.stderr))
            # It says it waits for its turn (the operator is told why it takes a while), and
            # does wait: the first run goes on only once it has.
            assert watches[0].told_waiting.wait(timeout=60), watches[0].text()
            assert proc.poll() is None

    first = run(engine, DAY, SETTINGS, batch=BATCH, after_batch=start_second)
    assert first["letters"] == REGISTRATIONS
    with second[0] as proc:  # closes its pipes
        code = proc.wait(timeout=60)
        assert proc.stdout is not None
        out = proc.stdout.read()
        watches[0].thread.join(timeout=10)  # its stderr read to the end before the pipe closes
    assert code == 0, watches[0].text()
    assert changed(json.loads(out)) == {}  # it found the day done
    assert_done_once(engine, regs)


def test_iies_run_past_its_wait_exits_1_and_changes_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(engine)
    monkeypatch.setattr(run_module, "RUN_WAIT_SECONDS", 0.5)
    with exclusive(engine, wait_seconds=0):
        code = olv_run(["iies", "run", "--date", DAY.isoformat()])
        with pytest.raises(RunBusy):
            run(engine, DAY, SETTINGS, wait_seconds=0)
    out = capsys.readouterr()
    assert code == 1 and out.out == ""
    assert out.err.startswith("error: another 'olv iies run' is working on")
    assert count(engine, CaseRow) == 0 and count(engine, Letter) == 0
    assert count(engine, Activity) == 0


def test_iies_run_that_fails_mid_way_releases_the_lock(engine: Engine) -> None:
    regs = seed(engine)

    class Crash(Exception):
        pass

    def crash_after_first(number: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        run(engine, DAY, SETTINGS, batch=BATCH, after_batch=crash_after_first)
    assert count(engine, CaseRow) == BATCH
    # No waiting allowed: the lock must be free the moment the failed run is gone.
    rest = run(engine, DAY, SETTINGS, batch=BATCH, wait_seconds=0)
    assert rest["cases_opened"] == REGISTRATIONS - BATCH
    assert_done_once(engine, regs)


_KILLED_MID_RUN = """
import os, signal, sys
from datetime import date
from enforcement.case_settings import CaseSettings
from enforcement.run import run
from olv import db

def die(number):
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind: as a power cut or OOM kill

run(db.make_engine(sys.argv[1]), date.fromisoformat(sys.argv[2]), CaseSettings(),
    batch=int(sys.argv[3]), after_batch=die)
"""


def test_iies_run_killed_mid_way_releases_the_lock_and_the_next_completes_the_day(
    db_url: str, engine: Engine
) -> None:
    regs = seed(engine)
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_RUN, db_url, DAY.isoformat(), str(BATCH)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    assert count(engine, CaseRow) == BATCH  # its first batch committed, the rest untouched
    rest = run(engine, DAY, SETTINGS, batch=BATCH, wait_seconds=10)
    assert rest["cases_opened"] == REGISTRATIONS - BATCH
    assert_done_once(engine, regs)


def test_iies_run_keeps_its_lock_through_idle_timeouts_and_stops_if_it_loses_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("a lost lock is a PostgreSQL matter: SQLite's dies only with its process")
    # The server ends a transaction idle for 1 s, as PgBouncer's idle_transaction_timeout or
    # a DBA's idle_in_transaction_session_timeout would end the one holding the lock.
    engine = db.make_engine(
        db_url, connect_args={"options": "-c idle_in_transaction_session_timeout=1000"}
    )
    try:
        regs = seed(engine)

        def slow_first(number: int) -> None:
            if number == 0:
                time.sleep(2.5)  # a long batch: the lock's transaction sits idle meanwhile

        monkeypatch.setattr(run_module, "_KEEPALIVE_SECONDS", 60.0)  # too rare to help
        with pytest.raises(RunLockLost):
            run(engine, DAY, SETTINGS, batch=BATCH, after_batch=slow_first)
        assert count(engine, CaseRow) == BATCH  # stopped before the next batch

        monkeypatch.setattr(run_module, "_KEEPALIVE_SECONDS", 0.2)  # the beat keeps it busy
        rest = run(engine, DAY, SETTINGS, batch=BATCH, after_batch=slow_first)
        assert rest["cases_opened"] == REGISTRATIONS - BATCH
        assert_done_once(engine, regs)
    finally:
        engine.dispose()


# --- a proof waits for the run too ---------------------------------------------------------

PROOF_PLATE = "PRF1"
NO_SERVICE_NAIC = "30003"  # no insurer on file: the proof becomes an MVF, opening a case
PROOF_ARGS = ["iies", "proof", "--plate", PROOF_PLATE, "--state", "NY"]
PROOF_ARGS += ["--naic", NO_SERVICE_NAIC, "--policy", "K1", "--date", DAY.isoformat()]


def proof_writes(engine: Engine) -> tuple[int, ...]:
    """Everything a proof may write: MVFs, cases, activities, letters, coverage periods."""
    return tuple(count(engine, m) for m in (MvfRequest, CaseRow, Activity, Letter, CoveragePeriod))


def test_iies_proof_posted_during_a_run_waits_for_it_then_posts(
    db_url: str, engine: Engine
) -> None:
    reg = add_registrant(engine, PROOF_PLATE, "1HGCM82633A900001")
    before = proof_writes(engine)
    with exclusive(engine, wait_seconds=0):  # a run is working (as another host's would)
        proc = _olv(db_url, *PROOF_ARGS)
        watch = StderrWatch(proc.stderr)
        deadline = time.monotonic() + 60
        while (
            not watch.told_waiting.is_set() and proc.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert proc.poll() is None, "the proof did not wait for the run: " + watch.text()
        assert watch.told_waiting.is_set(), watch.text()
        time.sleep(1.0)  # well past its first tries of the lock: still waiting, nothing written
        assert proc.poll() is None
        assert proof_writes(engine) == before
    with proc:  # the run is over: the proof goes on and posts
        out, _ = proc.communicate(timeout=60)
        watch.thread.join(timeout=10)
    assert proc.returncode == 0, watch.text()
    posted = json.loads(out)
    assert posted["live"] == "no_service" and posted["case_state"] == "SMV"
    assert count(engine, MvfRequest) == 1 and count(engine, CaseRow) == 1
    assert [a[0] for a in activities(engine, reg)] == ["IPA", "MVF"]


def test_iies_proof_past_its_wait_exits_1_and_changes_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    add_registrant(engine, PROOF_PLATE, "1HGCM82633A900001")
    before = proof_writes(engine)
    monkeypatch.setattr(proof_module, "COMMAND_WAIT_SECONDS", 0.5)
    raw = proof_module.ProofInput(PROOF_PLATE, "NY", NO_SERVICE_NAIC, "K1", DAY)
    with exclusive(engine, wait_seconds=0):
        started = time.monotonic()
        code = olv_run(PROOF_ARGS)
        took = time.monotonic() - started
        with pytest.raises(proof_module.ProofBusy):  # as the portal's page calls it
            proof_module.post(engine, raw, SETTINGS, who="user:dmv", wait_seconds=0)
    out = capsys.readouterr()
    assert code == 1 and out.out == "", out.err
    assert out.err.startswith("error: another 'olv iies run' is working on"), out.err
    assert "the proof was not posted (nothing changed)" in out.err
    assert 0.5 <= took < 30
    assert proof_writes(engine) == before
    # Once the run is over, the same proof posts.
    assert olv_run(PROOF_ARGS) == 0
    assert count(engine, MvfRequest) == 1


def test_iies_proof_does_not_keep_the_run_out(engine: Engine) -> None:
    """The proof lets the lock go once it has posted: a run right after it gets in without
    waiting."""
    add_registrant(engine, PROOF_PLATE, "1HGCM82633A900001")
    assert olv_run(PROOF_ARGS) == 0
    assert run(engine, DAY, SETTINGS, wait_seconds=0)["date"] == DAY.isoformat()
