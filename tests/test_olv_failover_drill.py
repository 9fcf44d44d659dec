"""Failover drill: the primary dies mid-traffic and its standby is promoted.

Both servers name the two PostgreSQL servers in one libpq multi-host URL with
``target_session_attrs=read-write``, so after the promotion their new connections find the new
primary by themselves. During the switch the SOAP service answers SYSU and the portal
``unable_to_verify`` (or 503 when its own reads fail), each within its budget; then both answer
Confirmed again without a restart, and no audit or query-log row is lost.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from olv import db
from portal.errors import DATABASE_DOWN
from portal.models import InsurerCall, QueryLog
from service.models import AuditRecord
from tests.helpers import data, loopback
from tests.helpers.faulty_network import DroppedConnects
from tests.helpers.portal import add_insurer, add_user, load_bob, portal_server, refusing_insurer
from tests.helpers.private_pg import PrivatePostgres, private_postgres, private_replication
from tests.helpers.soap import codes_of, envelope, post, request_xml, response_element, soap_server

SOAP_DEADLINE = 4.5  # both servers' defaults: the 5-s budget
PORTAL_BUDGET = 5.0
MARGIN = 1.0  # HTTP and client threads on a busy 2-core machine
CONFIRMED = ("Confirmed", ())
SYSU = ("Unconfirmed", ("SYSU",))
# Asked of the SOAP service directly with this VIN, and by the portal with VIN_OK: the audit
# rows of each are counted apart.
DIRECT_VIN = data.VIN_SHORT


def multi_host_url(*servers: PrivatePostgres) -> str:
    hosts = "&".join(f"host=127.0.0.1:{server.port}" for server in servers)
    return f"postgresql+psycopg://postgres@/postgres?{hosts}&target_session_attrs=read-write"


class Traffic:
    """Requests in a loop on a thread until stopped; every outcome with its duration."""

    def __init__(self, ask: Callable[[], str]) -> None:
        self.ask = ask
        self.outcomes: list[tuple[float, str, float]] = []  # (started, outcome, seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            outcome = self.ask()
            self.outcomes.append((started, outcome, time.monotonic() - started))
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def last(self) -> str | None:
        return self.outcomes[-1][1] if self.outcomes else None


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_primary_fails_standby_promoted_mid_traffic(fault: str, tmp_path: Path) -> None:
    """``killed``: the primary crashes. ``hung``: it stops answering (SIGSTOP; connections to
    it hang) for a while, then is fenced (stopped for good, as a failover manager does before
    promoting: a hung primary that later woke up would take writes beside the new one)."""
    # Synchronous replication: a commit is acknowledged only once the standby has it, so the
    # promoted standby holds every row a writer was told was written. (With asynchronous
    # replication the last commits before a crash can be lost: a database matter, not OLV's.)
    with private_replication(primary_settings=("synchronous_standby_names=*",)) as pair:
        primary, standby = pair
        url = multi_host_url(primary, standby)
        db.upgrade(url)
        data.load_policies(url, tmp_path)  # the CLI on the multi-host URL too
        with soap_server({"OLV_DATABASE_URL": url}, tmp_path) as soap:
            engine = db.make_engine(url)
            add_insurer(engine, data.NAIC, soap.url("/iicmva/00200809"))
            load_bob(engine, tmp_path, [(data.NAIC, "P-OK", data.VIN_OK)])
            token = add_user(engine, "officer1", "officer")
            engine.dispose()
            standby.wait_until_replayed(primary)
            with portal_server({"OLV_DATABASE_URL": url}, tmp_path) as portal:
                soap_pid, portal_pid = soap.process.pid, portal.process.pid
                sent = _drill(
                    fault, primary, standby, soap.url("/iicmva/00200809"), portal.base, token
                )
                _counts_settle(standby, sent)
                assert soap.process.poll() is None and soap.process.pid == soap_pid
                assert portal.process.poll() is None and portal.process.pid == portal_pid
            soap_log = soap.log.read_text()
    assert "audit write failed; will retry" in soap_log  # said once, kept, written later


def _drill(
    fault: str,
    primary: PrivatePostgres,
    standby: PrivatePostgres,
    soap_url: str,
    portal: str,
    token: str,
) -> tuple[int, int]:
    """The traffic through the switch, checked; (SOAP requests, portal requests) sent."""

    def ask_soap() -> str:
        body = envelope(request_xml("00200809", vin=DIRECT_VIN))
        try:
            response = post(soap_url, body)
        except httpx.HTTPError as exc:
            return f"http error {type(exc).__name__}"
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        code, reasons = codes_of(response_element(response))
        return {CONFIRMED: "confirmed", SYSU: "sysu"}.get((code, tuple(reasons)), code)

    def ask_portal() -> str:
        try:
            response = loopback.post(
                f"{portal}/api/v1/verify",
                json={"vin": data.VIN_OK},
                headers={"Authorization": f"Bearer {token}"},
                timeout=15,
            )
        except httpx.HTTPError as exc:
            return f"http error {type(exc).__name__}"
        if response.status_code == 503 and response.json()["error"] == DATABASE_DOWN:
            return "HTTP 503 before the query"  # its token could not be checked: no query
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        return str(response.json()["verdict"])

    assert ask_soap() == "confirmed" and ask_portal() == "confirmed"
    soap, state = Traffic(ask_soap), Traffic(ask_portal)
    time.sleep(1.0)
    if fault == "hung":
        primary.stop_all()
        time.sleep(2.0)
    primary.kill()  # mid-traffic, as a crash would (after the hang: the fence)
    time.sleep(1.5)
    standby.promote()
    promoted = time.monotonic()
    end = promoted + 30
    while not all(_recovered(t, promoted) for t in (soap, state)):
        assert time.monotonic() < end, f"no recovery: {soap.outcomes[-3:]} {state.outcomes[-3:]}"
        time.sleep(0.1)
    time.sleep(1.0)
    soap.stop()
    state.stop()
    soap_seen = Counter(outcome for _, outcome, _ in soap.outcomes)
    portal_seen = Counter(outcome for _, outcome, _ in state.outcomes)
    assert set(soap_seen) <= {"confirmed", "sysu"}, soap_seen
    assert soap_seen["sysu"] > 0, soap_seen  # the switch was seen
    answers = {"confirmed", "unable_to_verify", "HTTP 503", "HTTP 503 before the query"}
    assert set(portal_seen) <= answers, portal_seen
    assert sum(n for outcome, n in portal_seen.items() if outcome != "confirmed"), portal_seen
    for _, outcome, seconds in soap.outcomes:
        assert seconds <= SOAP_DEADLINE + MARGIN, f"SOAP {outcome} after {seconds:.2f} s"
    for _, outcome, seconds in state.outcomes:
        assert seconds <= PORTAL_BUDGET + MARGIN, f"portal {outcome} after {seconds:.2f} s"
    # Every request, the two checks before the traffic included; the portal's calls to the
    # SOAP service are audited there too (counted from its own log of calls).
    queries = len(state.outcomes) - portal_seen["HTTP 503 before the query"]
    return len(soap.outcomes) + 1, queries + 1


def _recovered(traffic: Traffic, promoted: float) -> bool:
    return any(t > promoted and o == "confirmed" for t, o, _ in traffic.outcomes[-3:])


def _counts_settle(new_primary: PrivatePostgres, sent: tuple[int, int], within: float = 30) -> None:
    """The logs reach exactly the number of requests sent (writers retry; none is lost)."""
    soap_sent, portal_sent = sent
    engine = db.make_engine(new_primary.url)
    try:
        end = time.monotonic() + within
        while True:
            with engine.connect() as conn:
                direct = conn.scalar(
                    select(func.count())
                    .select_from(AuditRecord)
                    .where(AuditRecord.vin == DIRECT_VIN)
                )
                via_portal = conn.scalar(
                    select(func.count())
                    .select_from(AuditRecord)
                    .where(AuditRecord.vin == data.VIN_OK)
                )
                queries = conn.scalar(select(func.count()).select_from(QueryLog))
                calls = conn.scalar(select(func.count()).select_from(InsurerCall))
            if (direct, queries) == (soap_sent, portal_sent) and via_portal == calls:
                return
            assert time.monotonic() < end, (
                f"audit rows {direct} of {soap_sent} SOAP requests, {via_portal} for "
                f"{calls} portal calls; query-log rows {queries} of {portal_sent}"
            )
            time.sleep(0.2)
    finally:
        engine.dispose()


def test_portal_moves_past_a_server_that_drops_connects(tmp_path: Path) -> None:
    """The first server of the URL is a host that is down (its packets are dropped): every
    connection of the portal (token check, plate and BoB reads, query log) gives up on it after
    libpq's connect timeout and takes the next server, within the budget."""
    blackhole = DroppedConnects()
    try:
        with private_postgres() as server, refusing_insurer() as refused:
            url = (
                f"postgresql+psycopg://postgres@/postgres?host=127.0.0.1:{blackhole.port}"
                f"&host=127.0.0.1:{server.port}&target_session_attrs=read-write"
            )
            db.upgrade(server.url)
            engine = db.make_engine(server.url)
            add_insurer(engine, data.NAIC, refused)
            load_bob(engine, tmp_path, [(data.NAIC, "P-OK", data.VIN_OK)])
            token = add_user(engine, "officer1", "officer")
            with portal_server({"OLV_DATABASE_URL": url}, tmp_path) as portal:
                for _ in range(3):
                    started = time.monotonic()
                    response = loopback.post(
                        f"{portal.base}/api/v1/verify",
                        json={"vin": data.VIN_OK},
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=15,
                    )
                    elapsed = time.monotonic() - started
                    assert response.status_code == 200, response.text
                    # The insurer refuses: the BoB record was read, the answer is in time.
                    assert response.json()["verdict"] == "unable_to_verify"
                    assert elapsed <= PORTAL_BUDGET + MARGIN, f"answered after {elapsed:.2f} s"
            with engine.connect() as conn:
                assert conn.scalar(select(func.count()).select_from(QueryLog)) == 3
            engine.dispose()
    finally:
        blackhole.close()
