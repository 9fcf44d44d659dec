"""Read replica (``OLV_DATABASE_READ_URL``) against a real hot standby made with pg_basebackup.

Which server answered is told by data, not by timing: with the standby's replay paused, a
change made on the primary is missing on the standby, so an answer shows where it was read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from olv import db, libpq
from olv.config import Settings
from olv.errors import UnsupportedDatabaseURL
from olv.read_replica import ReadReplica, check_read_url
from portal.errors import ApiError
from portal.state_reads import StateReader
from tests.helpers import data
from tests.helpers.portal import add_registration
from tests.helpers.private_pg import PrivatePostgres, private_replication
from tests.helpers.soap import (
    Server,
    codes_of,
    envelope,
    post,
    request_xml,
    response_element,
    soap_server,
)

Pair = tuple[PrivatePostgres, PrivatePostgres]
CONFIRMED = ("Confirmed", [])
DEADLINE = 4.5  # the SOAP service's default: the 5-s budget less the way back
MARGIN = 1.0  # HTTP and client threads on a busy 2-core machine
PLATE = "OLV1"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with private_replication() as (primary, standby):
        db.upgrade(primary.url)
        data.load_policies(primary.url, tmp_path_factory.mktemp("replica"))
        engine = db.make_engine(primary.url)
        add_registration(engine, PLATE, "ID", data.VIN_OK)
        engine.dispose()
        standby.wait_until_replayed(primary)
        yield primary, standby


def _stale_standby(primary: PrivatePostgres, standby: PrivatePostgres) -> None:
    """Pause the standby's replay, then change P-OK on the primary only: the standby still
    confirms it, the primary no longer does (pending review)."""
    standby.sql("SELECT pg_wal_replay_pause()")
    # Policy keys are stored normalized: P-OK is 'POK'.
    primary.sql("UPDATE policy SET pending_review = true WHERE policy_key = 'POK'")


def _in_step_again(primary: PrivatePostgres, standby: PrivatePostgres) -> None:
    standby.sql("SELECT pg_wal_replay_resume()")
    primary.sql("UPDATE policy SET pending_review = false WHERE policy_key = 'POK'")
    primary.sql(
        "INSERT INTO registrations (plate, state, vin) VALUES ('OLV1', 'ID', "
        f"'{data.VIN_OK}') ON CONFLICT DO NOTHING"
    )
    standby.wait_until_replayed(primary)


def _ask(server: Server) -> tuple[tuple[str, list[str]], float]:
    started = time.monotonic()
    resp = post(server.url("/iicmva/00200809"), envelope(request_xml("00200809")))
    elapsed = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    return codes_of(response_element(resp)), elapsed


def _until(server: Server, want_confirmed: bool, within: float = 10.0) -> None:
    end = time.monotonic() + within
    while (_ask(server)[0] == CONFIRMED) != want_confirmed:
        assert time.monotonic() < end, f"never {'Confirmed' if want_confirmed else 'refused'}"
        time.sleep(0.1)


def _soap_env(pair: Pair, max_lag: float) -> dict[str, str]:
    primary, standby = pair
    return {
        "OLV_DATABASE_URL": primary.url,
        "OLV_DATABASE_READ_URL": standby.url,
        "OLV_DATABASE_READ_MAX_LAG_SECONDS": str(max_lag),
    }


# --- settings ----------------------------------------------------------------------------------


def test_read_url_must_be_a_postgresql_standby_of_postgresql(db_url: str) -> None:
    standby = "postgresql+psycopg://olv:secret@db2:5432/olv"
    for read_url in ("sqlite:///replica.db", "mysql://olv:secret@db2/olv"):
        with pytest.raises(UnsupportedDatabaseURL, match="OLV_DATABASE_READ_URL") as caught:
            check_read_url(Settings(database_url=db_url, database_read_url=read_url))
        assert "secret" not in str(caught.value)
    if db.is_sqlite(db_url):
        with pytest.raises(UnsupportedDatabaseURL, match="PostgreSQL OLV_DATABASE_URL"):
            check_read_url(Settings(database_url=db_url, database_read_url=standby))
    else:
        check_read_url(Settings(database_url=db_url, database_read_url=standby))
    check_read_url(Settings(database_url=db_url))  # none configured: nothing to check


def test_multi_host_urls_become_one_libpq_connection_string() -> None:
    repeated = (
        "postgresql+psycopg://olv@/olv?host=db1:5432&host=db2:5433&target_session_attrs=read-write"
    )
    listed = (
        "postgresql+psycopg://olv@/olv?host=db1,db2&port=5432,5433&target_session_attrs=read-write"
    )
    for url in (repeated, listed):
        info = libpq.conninfo(url)
        assert "host=db1,db2" in info and "port=5432,5433" in info
        assert "target_session_attrs=read-write" in info
        assert libpq.servers(url) == "db1:5432,db2:5433"
        assert db.describe(url) == "the PostgreSQL database olv at db1:5432,db2:5433"
    assert "password='p@ss word'" in libpq.conninfo("postgresql+psycopg://u:p%40ss%20word@h/db")


# --- the lag rule ------------------------------------------------------------------------------


def test_lag_rule_idle_primary_paused_replay_and_resume(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    primary, standby = pair
    caplog.set_level(logging.INFO, logger="olv.read_replica")
    replica = ReadReplica(standby.url, max_lag_seconds=0.5, check_seconds=0.1)
    replica.start()
    try:
        _wait(replica.usable, "the standby was never used")
        # An idle primary: the last replayed commit grows old, yet nothing is missing.
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            assert replica.usable(), "an idle primary made an up-to-date standby look late"
            time.sleep(0.05)
        standby.sql("SELECT pg_wal_replay_pause()")
        primary.sql("SELECT txid_current()")  # a commit the standby receives, not replays
        try:
            _wait(lambda: not replica.usable(), "a paused standby stayed in use")
        finally:
            standby.sql("SELECT pg_wal_replay_resume()")
        _wait(replica.usable, "the standby was not used again after catching up")
    finally:
        replica.close()
    messages = [(r.getMessage(), getattr(r, "reason", "")) for r in caplog.records]
    left_out = [reason for msg, reason in messages if msg.startswith("read replica left out")]
    assert left_out and "behind the primary (limit 0.5 s)" in left_out[0]
    assert sum(msg == "read replica in use" for msg, _ in messages) == 2  # logged per change


def _wait(condition: Callable[[], bool], failure: str, within: float = 10.0) -> None:
    end = time.monotonic() + within
    while not condition():
        assert time.monotonic() < end, failure
        time.sleep(0.05)


# --- the SOAP service --------------------------------------------------------------------------


def test_soap_reads_the_standby_and_falls_back_when_it_hangs(pair: Pair, tmp_path: Path) -> None:
    primary, standby = pair
    with soap_server(_soap_env(pair, 3600), tmp_path) as server:
        _until(server, want_confirmed=True)
        time.sleep(1.5)  # the worker's first lag check has run
        _stale_standby(primary, standby)
        try:
            for _ in range(3):  # within the lag limit: the standby's (stale) answer
                assert _ask(server)[0] == CONFIRMED
            standby.stop_all()
            try:
                # Every answer is the primary's, in time: none waits for the hung standby.
                with ThreadPoolExecutor(10) as pool:
                    results = list(pool.map(lambda _: _ask(server), range(20)))
                for codes, elapsed in results:
                    assert codes != CONFIRMED
                    assert elapsed <= DEADLINE + MARGIN, f"answered after {elapsed:.2f} s"
            finally:
                standby.continue_all()
            _until(server, want_confirmed=True)  # the standby is used again, no restart
        finally:
            _in_step_again(primary, standby)
    log = server.log.read_text()
    assert "read replica left out; reading from the primary" in log
    assert "took over 1 s" in log or "does not answer" in log


def test_soap_leaves_a_lagging_standby_out(pair: Pair, tmp_path: Path) -> None:
    primary, standby = pair
    with soap_server(_soap_env(pair, 1), tmp_path) as server:
        _until(server, want_confirmed=True)
        _stale_standby(primary, standby)
        try:
            _until(server, want_confirmed=False)  # the primary's answer, once the lag is over 1 s
            for _ in range(3):
                codes, elapsed = _ask(server)
                assert codes != CONFIRMED and elapsed <= DEADLINE + MARGIN
        finally:
            _in_step_again(primary, standby)
        _until(server, want_confirmed=True)
    assert "behind the primary (limit 1 s)" in server.log.read_text()


def test_soap_answers_from_the_standby_while_the_primary_hangs(pair: Pair, tmp_path: Path) -> None:
    """The primary stops answering (SIGSTOP): the look-ups still get the standby's answers,
    in time; the audit rows wait in the writer and reach the primary once it is back."""
    primary, standby = pair
    with soap_server(_soap_env(pair, 5), tmp_path) as server:
        _until(server, want_confirmed=True)
        time.sleep(1.5)  # the worker's first lag check has run
        before = _audit_rows(primary)
        primary.stop_all()
        try:
            results = [_ask(server) for _ in range(10)]
        finally:
            primary.continue_all()
        for codes, elapsed in results:
            assert codes == CONFIRMED  # a hung primary would have made these SYSU
            assert elapsed <= DEADLINE + MARGIN, f"answered after {elapsed:.2f} s"
        end = time.monotonic() + 30
        while _audit_rows(primary) < before + len(results):
            assert time.monotonic() < end, "audit rows lost while the primary hung"
            time.sleep(0.2)
        assert server.process.poll() is None  # no restart


def _audit_rows(server: PrivatePostgres) -> int:
    return int(server.sql("SELECT count(*) FROM audit_record")[0][0])


# --- the portal's state reads ------------------------------------------------------------------


def test_portal_plate_look_up_reads_the_standby_and_survives_its_loss(pair: Pair) -> None:
    primary, standby = pair

    async def scenario() -> None:
        replica = ReadReplica(standby.url, max_lag_seconds=3600, check_seconds=0.2)
        replica.start()
        engine = db.make_engine(primary.url)
        reader = StateReader(engine, 5.0, replica)
        await reader.open()
        try:
            while not replica.usable():
                await asyncio.sleep(0.05)
            standby.sql("SELECT pg_wal_replay_pause()")
            primary.sql(f"DELETE FROM registrations WHERE plate = '{PLATE}'")
            vin, state, records = await reader.vehicle(None, PLATE, None, 5.0)
            assert (vin, state) == (data.VIN_OK, "ID")  # only the standby still has it
            standby.stop_all()
            try:
                started = time.monotonic()
                with pytest.raises(ApiError) as caught:  # the primary's answer: no such plate
                    await reader.vehicle(None, PLATE, None, 5.0)
                assert caught.value.status == 404
                assert time.monotonic() - started < 5.0
                assert not replica.usable()
            finally:
                standby.continue_all()
        finally:
            await reader.close()
            replica.close()
            engine.dispose()
            _in_step_again(primary, standby)

    asyncio.run(scenario())
