"""On SQLite the reads of one batch run inside one read transaction (service.store): one
shared lock and one look at the WAL for the batch. The transaction must end with the batch,
whatever happens in it: a snapshot left open would hide every later change of the store."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from olv import db
from olv.config import Settings
from olv.iicmva import V0809, Code
from service.coverage import BatchReads, Decision, StoreUnavailable
from service.request import CoverageQuery
from service.store import SqlPolicyStore
from service.verifier import Verifier
from tests.helpers import data
from tests.helpers.soap import today

NEW_KEY = "LATE-1"
NEW_VIN = "1G1ZT53826F109149"


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[SqlPolicyStore]:
    if not db.is_sqlite(db_url):
        pytest.skip("PostgreSQL reads a batch in one statement: there is no transaction to span")
    with data.policy_store(db_url, tmp_path, data.policy_csv()) as policies:
        yield policies


def _reads() -> BatchReads:
    return BatchReads(
        [(data.NAIC, "POK"), (data.NAIC, "NOPE"), (data.NAIC, NEW_KEY)],
        [(data.NAIC, data.VIN_EXPIRED, "NOPE"), (data.NAIC, NEW_VIN, "")],
    )


def _driver(store: SqlPolicyStore) -> sqlite3.Connection:
    store.read_batch(_reads())  # the thread's connection is opened by its first read
    driver = store._direct[threading.get_ident()]
    assert isinstance(driver, sqlite3.Connection)
    return driver


def _add_policy_elsewhere(db_url: str) -> None:
    """A policy committed by another connection, as an import's swap would."""
    path = db.sqlite_path(make_url(db_url))
    assert path is not None
    with sqlite3.connect(path) as other:
        policy_id = other.execute(
            "INSERT INTO policy (naic, policy_number, policy_key, policy_type, pending_review)"
            " VALUES (?, ?, ?, 'VS', 0) RETURNING id",
            (data.NAIC, NEW_KEY, NEW_KEY),
        ).fetchone()[0]
        other.execute(
            "INSERT INTO coverage (policy_id, naic, vin, effective_date, expiration_date)"
            " VALUES (?, ?, ?, '2020-01-01', '2099-12-31')",
            (policy_id, data.NAIC, NEW_VIN),
        )
    other.close()


def test_a_batch_takes_the_lock_once_and_ends_its_transaction(store: SqlPolicyStore) -> None:
    driver = _driver(store)
    statements: list[str] = []
    driver.set_trace_callback(statements.append)
    found = store.read_batch(_reads())
    driver.set_trace_callback(None)
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT", statements
    assert sum(s.startswith("SELECT") for s in statements) >= 3  # the batch's reads, inside
    assert not driver.in_transaction
    assert (data.NAIC, "POK") in found.policies and (data.NAIC, data.VIN_EXPIRED) in found.periods


def test_the_next_batch_sees_what_was_committed_after_the_last(
    store: SqlPolicyStore, db_url: str
) -> None:
    _driver(store)
    before = store.read_batch(_reads())
    assert (data.NAIC, NEW_KEY) not in before.policies
    _add_policy_elsewhere(db_url)
    after = store.read_batch(_reads())
    assert (data.NAIC, NEW_KEY) in after.policies
    assert (data.NAIC, NEW_VIN) in after.periods


def test_a_read_that_fails_inside_the_batch_leaves_no_snapshot_behind(
    store: SqlPolicyStore, db_url: str
) -> None:
    driver = _driver(store)

    def no_policy_reads(action: int, table: str | None, *_: object) -> int:
        return sqlite3.SQLITE_DENY if table == "policy" else sqlite3.SQLITE_OK

    driver.set_authorizer(no_policy_reads)
    with pytest.raises(StoreUnavailable):
        store.read_batch(_reads())
    assert store._direct.get(threading.get_ident()) is not driver, "the failed connection stays"
    _add_policy_elsewhere(db_url)
    assert (data.NAIC, NEW_KEY) in store.read_batch(_reads()).policies


def test_a_batch_whose_transaction_cannot_begin_reads_on_a_new_connection(
    store: SqlPolicyStore, db_url: str
) -> None:
    driver = _driver(store)
    driver.set_progress_handler(lambda: 1, 1)  # every statement on it is interrupted
    _add_policy_elsewhere(db_url)
    found = store.read_batch(_reads())
    assert (data.NAIC, NEW_KEY) in found.policies
    assert store._direct.get(threading.get_ident()) is not driver


def test_a_batch_cut_as_its_transaction_begins_reads_nothing(store: SqlPolicyStore) -> None:
    """The deadline gate's cut (service.db_deadline) ends the batch where it lands, the
    transaction's start included: the reads are not made again on a new connection."""
    driver = _driver(store)
    driver.set_progress_handler(lambda: 1, 1)  # what the cut does to the statement running
    store._cut.add(threading.get_ident())
    with pytest.raises(StoreUnavailable):
        store.read_batch(_reads())
    assert threading.get_ident() not in store._cut
    assert store._direct.get(threading.get_ident()) is None, "no connection opened after a cut"


# --- the verifier's batches on SQLite: each request decided in turn, in one snapshot --------


@pytest.fixture
def verifier(store: SqlPolicyStore, db_url: str) -> Iterator[Verifier]:
    checker = Verifier(Settings(database_url=db_url))
    try:
        yield checker
    finally:
        checker.close()


def _batch() -> list[tuple[CoverageQuery, bool]]:
    day = today().date().isoformat()

    def query(key: str, vin: str) -> CoverageQuery:
        return CoverageQuery(V0809, naic=data.NAIC, policy_key=key, vin=vin, verification_date=day)

    return [
        (query("P-OK", data.VIN_OK), True),
        (query("P-OK", data.VIN_CANCELLED), True),  # the VIN is not on the policy
        (query("NOPE-1", data.VIN_EXPIRED), True),  # no such key: the VIN is read next
        (query("UNKNOWN", data.VIN_NOWHERE), True),
        (query("FLEET-1", data.VIN_NOWHERE), True),
        (query("P-OK", data.VIN_OK), False),
    ]


def test_a_batch_is_decided_request_by_request_in_one_transaction(verifier: Verifier) -> None:
    """Nothing to share on SQLite: each request decided once, as alone, and all of them
    inside one read transaction (one shared lock, one moment of the store)."""
    batch = _batch()
    alone = [verifier._decide(q, a) for q, a in batch]
    assert not verifier.store.shares_reads
    driver = _driver(verifier.store)
    statements: list[str] = []
    driver.set_trace_callback(statements.append)
    together = verifier._decide_each(batch)
    driver.set_trace_callback(None)
    assert together == alone
    assert alone[0] == Decision(()) and alone[1] == Decision((Code.PKEY4,))
    assert alone[-1] == Decision((Code.UREQ,))
    assert statements[0] == "BEGIN" and statements[-1] == "COMMIT", statements
    reads = [s for s in statements if s.startswith("SELECT")]
    # One read for each request's key and one for each VIN the table goes on to from there
    # (the batch's steps made 5: they decide each request twice, reading each key once).
    assert len(reads) == 6, reads
    assert not driver.in_transaction


def test_a_read_that_fails_in_a_batch_answers_the_rest_sysu_unread(verifier: Verifier) -> None:
    driver = _driver(verifier.store)
    statements: list[str] = []
    driver.set_trace_callback(statements.append)

    def no_policy_reads(action: int, table: str | None, *_: object) -> int:
        return sqlite3.SQLITE_DENY if table == "policy" else sqlite3.SQLITE_OK

    driver.set_authorizer(no_policy_reads)
    decisions = verifier._decide_each(_batch())
    assert decisions == [Decision((Code.SYSU,))] * len(_batch())
    assert sum(s.startswith("SELECT") for s in statements) <= 1, statements
    assert verifier.store._direct.get(threading.get_ident()) is not driver
