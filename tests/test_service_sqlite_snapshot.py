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
from service.coverage import BatchReads, StoreUnavailable
from service.store import SqlPolicyStore
from tests.helpers import data

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
