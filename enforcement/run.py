"""``olv iies run [--date D]``: the daily run (SPEC §6 "Coverage and cases").

1. Unmatched new business is matched again (the intake's ``rematch``, when it has one).
2. Matched transactions go into the coverage timeline of their registration (``posted_on``);
   a cancellation waits for its effective date. Answers carrying an MVF's tracking number
   answer it.
3. Every registration with something new, or with an open case whose next step is due, is
   moved by the case engine.

Steps 2 and 3 run a batch of registrations per database transaction: a crash rolls back only
the batch it was in, and a rerun finds the rest already done (the engine decides nothing twice).
The journal ``iies_run_steps`` records each finished run with its counts.

One run works at a time per database (:func:`exclusive`): the timer may be enabled on several
hosts sharing it, and two runs reading the same records before either wrote would each open the
case and send the letter. A run that finds another working waits for it (at most
:data:`RUN_WAIT_SECONDS`), then finds the day done and changes nothing; past the wait it stops
with :class:`RunBusy` (exit 1), having changed nothing. The lock dies with the run's process or
connection, so a run that crashed never keeps the next one out. ``olv iies proof`` takes the
same lock around its changes (:mod:`enforcement.proof`): it moves a registration's case too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from enforcement.case_settings import CaseSettings
from enforcement.case_store import (
    Counts,
    Writer,
    answer_mvfs,
    due_filter,
    group_by_registration,
    is_due,
    load_records,
    move_record,
    open_lapse,
    write_case_changes,
)
from enforcement.models import Case as CaseRow
from enforcement.models import IiesRunStep, IiesTransaction
from olv import db
from olv.db import among, transaction
from olv.errors import OlvError

BATCH = 2000
STEP = "cases"

log = logging.getLogger(__name__)

# How long a run waits for another one to finish: longer than a day's run of the largest
# state, so that the runs of several hosts' timers end in success, the later ones finding
# the day done, rather than in a failed unit.
RUN_WAIT_SECONDS = 6 * 3600.0
_POLL_SECONDS = 0.5
# Below PgBouncer's idle_transaction_timeout (60 s in deploy/pgbouncer) and any sensible
# idle_in_transaction_session_timeout: either would end the transaction holding the lock.
_KEEPALIVE_SECONDS = 10.0
LOCK_NAME = "olv.enforcement.iies-run"


def _lock_key(name: str) -> int:
    """A PostgreSQL advisory lock key (signed 64-bit) that stays the same across versions
    and hosts: from the name, not from Python's per-process salted ``hash``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


RUN_LOCK_KEY = _lock_key(LOCK_NAME)
BATCH_LOCK_KEY = _lock_key(LOCK_NAME + ":batch")


class RunBusy(OlvError):
    """Another run kept the database past this run's wait (exit 1); this one changed nothing."""


def _run_busy(reason: str) -> OlvError:
    return RunBusy(
        f"{reason}; this run changed nothing (it does the day's work; run again once it has "
        "finished)"
    )


class RunLockLost(OlvError):
    """The connection holding the run's lock was lost: the run stops between two batches
    (exit 1); what it committed stands, and the next run finishes the day."""


def run(
    engine: Engine,
    day: date,
    settings: CaseSettings,
    *,
    batch: int = BATCH,
    after_batch: Callable[[int], None] | None = None,
    wait_seconds: float | None = None,
) -> dict[str, Any]:
    """Run the day; the summary of what this call changed. ``after_batch`` (tests) is called
    with each finished batch's number. ``wait_seconds``: how long to wait for another run
    working on the database (default :data:`RUN_WAIT_SECONDS`)."""
    wait = RUN_WAIT_SECONDS if wait_seconds is None else wait_seconds
    with exclusive(engine, wait) as still_held:
        return _run(engine, day, settings, batch, after_batch, still_held)


def _run(
    engine: Engine,
    day: date,
    settings: CaseSettings,
    batch: int,
    after_batch: Callable[[int], None] | None,
    still_held: Callable[[], None],
) -> dict[str, Any]:
    rematched = _rematch(engine, day)
    counts = Counts()
    ids = _due_registrations(engine, day)
    for number, start in enumerate(range(0, len(ids), batch)):
        still_held()
        counts.add(_batch(engine, ids[start : start + batch], day, settings))
        if after_batch is not None:
            after_batch(number)
    still_held()
    if settings.bob_monitoring:
        from enforcement.bob_monitor import check_month

        bob = check_month(engine, day, settings)
        # Cases opened now get their first step (the grace) from tomorrow's run on.
        counts.cases_opened += bob["bob_cases_opened"]
        counts.cases_closed += bob["bob_cases_closed"]
        counts.activities += bob["bob_activities"]
        counts.letters += bob["bob_letters"]
    summary: dict[str, Any] = {"date": day.isoformat(), **counts.as_dict()}
    if settings.bob_monitoring:
        summary["bob_absent"] = bob["bob_absent"]
    summary["rematched"] = rematched.get("matched", 0) + rematched.get("resolved", 0)
    summary["unresolved_final"] = rematched.get("final", 0)
    _journal(engine, day, summary)
    return summary


def _due_registrations(engine: Engine, day: date) -> list[int]:
    with engine.connect() as conn:
        posting = conn.scalars(
            select(IiesTransaction.registration_id).where(*due_filter(day)).distinct()
        ).all()
        due = conn.scalars(
            select(CaseRow.registration_id)
            .where(CaseRow.closed_on.is_(None), CaseRow.next_due <= day)
            .distinct()
        ).all()
    return sorted({int(i) for i in posting if i is not None} | {int(i) for i in due})


def _batch(engine: Engine, ids: Sequence[int], day: date, settings: CaseSettings) -> Counts:
    counts = Counts()
    with transaction(engine) as session:
        batch_turn(session)
        records = load_records(session, ids, registrants=False)
        # The batch's transactions due for posting are among those its records hold: marked
        # posted here in memory, and in the table by one UPDATE (not one per transaction).
        fresh = sorted(
            (t for r in records.values() for t in r.transactions if is_due(t, day)),
            key=lambda t: t.id,
        )
        for txn in fresh:
            set_committed_value(txn, "posted_on", day)
        if fresh:  # by id: exactly those read, whatever arrived since
            session.connection().execute(
                update(IiesTransaction)
                .where(among(session, IiesTransaction.id, [t.id for t in fresh]))
                .values(posted_on=day)
            )
        grouped = group_by_registration(fresh)
        writer = Writer(session, settings, f"run:{day}", defer_activities=True)
        writer.batch = records.values()
        writer.reserve_doc_ids(2 * len(ids))  # a record rarely gets more than one letter a day
        # First pass: the batch's new cases, written together (their ids are needed below).
        for record in records.values():
            record.known_facts = record.facts()
            if record.open_case() is None:
                open_lapse(writer, record, record.known_facts, day, flush=False)
        writer.write_cases()
        for registration_id in ids:
            held = records.get(registration_id)
            if held is None:
                continue
            posted = grouped.get(registration_id, [])
            counts.mvf_answered += answer_mvfs(session, held, day, posted)
            counts.add(move_record(session, held, day, settings, f"run:{day}", posted, writer))
            counts.transactions_matched += len(posted)
        write_case_changes(session)  # before the flush, which would send one UPDATE per case
        session.flush()  # cases opened in the loop get their ids before their activities
        writer.write_activities()
    return counts


def _journal(engine: Engine, day: date, summary: dict[str, Any]) -> None:
    with transaction(engine) as session:
        row = session.get(IiesRunStep, (day, STEP))
        now = datetime.now(UTC)
        if row is None:
            session.add(
                IiesRunStep(run_date=day, step=STEP, done_at=now, summary=json.dumps(summary))
            )
        else:  # a rerun: keep the first run's counts beside the latest time
            row.done_at = now


def _rematch(engine: Engine, day: date) -> dict[str, int]:
    """The intake's daily re-matching of unmatched new business (before posting, so what it
    matches today is posted today)."""
    from enforcement.returns import rematch

    return rematch(engine, day)


# --- one run at a time per database ---------------------------------------------------------


@contextmanager
def exclusive(
    engine: Engine,
    wait_seconds: float,
    *,
    then: str = "then doing what it left",
    busy: Callable[[str], OlvError] = _run_busy,
) -> Iterator[Callable[[], None]]:
    """Hold the database's run lock for the block, waiting at most ``wait_seconds`` for it.
    Yields a check that raises :class:`RunLockLost` once the lock can no longer be vouched for.

    The daily run holds it; so does a proof (:func:`enforcement.proof.post`) while it writes.
    ``then`` says in the log what the caller does once it has the lock; past the wait,
    ``busy`` makes the error (given why) that is raised: :class:`RunBusy` for the run.

    PostgreSQL: an advisory lock of the transaction of a connection of its own, so that it
    also holds through a transaction pooler (a session lock would stay behind on a pooled
    server connection) and ends with a rollback, a closed connection or a dead process.
    SQLite: ``flock`` on a file beside the database, which the kernel releases when the
    process ends however it ends.
    """
    waiter = _Waiter(then, busy)
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, wait_seconds, waiter) as still_held:
            yield still_held
        return
    with _file_lock(engine, wait_seconds, waiter):
        yield _held


def batch_turn(session: Session) -> None:
    """Take turns with every other batch of changes on PostgreSQL, for the transaction.

    Should the run lock be lost (its connection killed) while another run, or a proof, has
    taken it, their transactions still take turns, each reading what the other committed:
    neither decides anything twice. (SQLite's lock dies only with its process.)
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": BATCH_LOCK_KEY})


@dataclass(frozen=True, slots=True)
class _Waiter:
    """What the one waiting for the lock says: in the log, and past its wait."""

    then: str
    busy: Callable[[str], OlvError]


def _held() -> None:
    """A lock that cannot be lost while its holder lives."""


def _acquire(
    engine: Engine, take: Callable[[], bool], wait_seconds: float, waiter: _Waiter
) -> None:
    if take():
        return
    deadline = time.monotonic() + wait_seconds
    # Whoever holds it now: a run, most likely (a proof holds it for a moment only).
    log.info(
        "another olv iies run is working on this database: waiting for it to finish "
        "(at most %g s), %s",
        wait_seconds,
        waiter.then,
        extra={"wait_seconds": wait_seconds},
    )
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(_POLL_SECONDS, left))
        if take():
            log.info("the other olv iies run has finished: going on")
            return
    raise waiter.busy(
        f"another 'olv iies run' is working on {db.describe(engine.url)} and did not finish "
        f"within {wait_seconds:g} s"
    )


@contextmanager
def _advisory_lock(
    engine: Engine, wait_seconds: float, waiter: _Waiter
) -> Iterator[Callable[[], None]]:
    conn = engine.connect()
    try:

        def take() -> bool:
            query = text("SELECT pg_try_advisory_xact_lock(:key)")
            return bool(conn.scalar(query, {"key": RUN_LOCK_KEY}))

        _acquire(engine, take, wait_seconds, waiter)
        keepalive = _Keepalive(conn)
        try:
            yield keepalive.check
        finally:
            keepalive.stop()
    finally:
        try:
            conn.close()  # the rollback that releases the lock
        except SQLAlchemyError:  # the connection is gone, and the lock with it
            log.warning("the connection holding the olv iies run lock was already closed")


class _Keepalive:
    """Keeps the lock's transaction from looking idle to a pooler or to the server (either
    would end it, and with it the lock, mid-run), and tells the run when it has ended anyway."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._turn = threading.Lock()  # the beat and the run's checks share the connection
        self._stopping = threading.Event()
        self._lost: SQLAlchemyError | None = None
        self._thread = threading.Thread(target=self._beat, name="iies-run-lock", daemon=True)
        self._thread.start()

    def _probe(self) -> None:
        with self._turn:
            if self._lost is not None:
                return
            try:
                self._conn.execute(text("SELECT 1"))
            except SQLAlchemyError as exc:
                self._lost = exc

    def _beat(self) -> None:
        while not self._stopping.wait(_KEEPALIVE_SECONDS) and self._lost is None:
            self._probe()

    def check(self) -> None:
        """Between two batches: one round trip, so that a lost lock stops the run at once
        rather than at the next beat."""
        self._probe()
        if self._lost is not None:
            raise RunLockLost(
                "the database connection holding the olv iies run lock was lost "
                f"({type(self._lost).__name__}); the run stopped between two batches, what it "
                "committed stands: run again to finish the day"
            )

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


_MEMORY_LOCK = threading.Lock()  # an in-memory database is seen by this process only


@contextmanager
def _file_lock(engine: Engine, wait_seconds: float, waiter: _Waiter) -> Iterator[None]:
    path = db.sqlite_path(engine.url)
    if path is None:
        _acquire(engine, lambda: _MEMORY_LOCK.acquire(blocking=False), wait_seconds, waiter)
        try:
            yield
        finally:
            _MEMORY_LOCK.release()
        return
    # Not the database file itself: closing any descriptor of it would drop the POSIX locks
    # SQLite holds on it in this process. Read-only is enough for flock, and lets any user
    # who may run the command use the file another created.
    fd = os.open(path.with_name(path.name + "-iies-run.lock"), os.O_RDONLY | os.O_CREAT, 0o644)
    try:

        def take() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        _acquire(engine, take, wait_seconds, waiter)
        yield
    finally:
        os.close(fd)  # releases the flock (as the process's end would)
