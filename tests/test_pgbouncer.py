"""OLV through PgBouncer in transaction mode (the shipped ``deploy/pgbouncer/pgbouncer.ini``).

A private PostgreSQL with a private PgBouncer in front; every process connects through the
pooler: ``olv db upgrade``, ``olv policies import``, ``olv bob load``, ``olv iies load/run``,
``olv soap serve`` and ``olv portal serve`` with two workers each. Under concurrent traffic
every SOAP answer is Confirmed and every portal verification confirmed (psycopg's prepared
statements, or a session setting, would meet another server connection). Then the pooler
drops its connections mid-traffic (``RECONNECT``, ``KILL``, a restart): every answer still
comes within the budget — SYSU or a 503 at worst — both servers log what happened, and the
same processes answer again without a restart.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from olv import db
from olv.errors import UnsupportedDatabaseURL
from service import audit
from service.audit import AuditEntry, AuditWriter
from service.coverage import StoreUnavailable
from service.models import AuditRecord
from service.store import SqlPolicyStore
from tests.helpers import loopback
from tests.helpers.data import NAIC, VIN_OK, policy_csv
from tests.helpers.iies import REGISTRATION_HEADER, VIN_A, row, write_csv
from tests.helpers.olv_cli import olv
from tests.helpers.pgbouncer import PrivateBouncer, private_pgbouncer
from tests.helpers.portal import portal_server, write_bob
from tests.helpers.private_pg import PrivatePostgres, private_postgres
from tests.helpers.soap import (
    codes_of,
    envelope,
    free_port,
    request_xml,
    response_element,
    start_until_healthy,
    stop_process,
    today,
)

pytestmark = pytest.mark.slow

BUDGET = 5.0  # SPEC §1: the SOAP deadline and the portal's budget
MARGIN = 2.0  # HTTP, client threads and two servers on a busy 2-core machine
CONFIRMED = ("Confirmed", [])
SYSU = ("Unconfirmed", ["SYSU"])
PASSWORD = "Officer-Duty-Long-7"


@dataclass
class Stack:
    pg: PrivatePostgres
    bouncer: PrivateBouncer
    url: str  # through PgBouncer
    soap: str  # the 00200809 endpoint
    soap_log: Path
    portal: str
    portal_log: Path
    token: str
    folder: Path

    def ask_soap(self) -> tuple[tuple[str, list[str]], float]:
        started = time.monotonic()
        resp = loopback.post(
            self.soap,
            content=envelope(request_xml("00200809")),
            headers={"Content-Type": "text/xml"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        assert resp.status_code == 200, resp.text  # never a fault
        return codes_of(response_element(resp)), elapsed

    def verify(self) -> tuple[str, float]:
        """One portal verification by VIN: its verdict, or ``HTTP <status>``."""
        started = time.monotonic()
        resp = loopback.post(
            f"{self.portal}/api/v1/verify",
            json={"vin": VIN_OK},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        elapsed = time.monotonic() - started
        if resp.status_code != 200:
            return f"HTTP {resp.status_code}", elapsed
        return str(resp.json()["verdict"]), elapsed


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("pgbouncer")
    with private_postgres() as pg, private_pgbouncer(pg.port) as bouncer:
        with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE olv")
        url = bouncer.url("olv")
        olv(url, "db", "upgrade")
        policies = folder / "policies.csv"
        policies.write_text(policy_csv())
        olv(url, "policies", "import", str(policies))
        port = free_port()
        soap_log = folder / "soap.log"
        soap_env = {
            **os.environ,
            "OLV_DATABASE_URL": url,
            "OLV_AUDIT_FLUSH_SECONDS": "0.1",
            "OLV_DEADLINE_SECONDS": str(BUDGET - 0.5),
        }
        command = [sys.executable, "-m", "olv", "soap", "serve", "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        soap = start_until_healthy([*command, "--workers", "2"], soap_env, soap_log, base, "soap")
        try:
            soap_url = f"{base}/iicmva/00200809"
            olv(
                url,
                "insurers",
                "add",
                "--naic",
                NAIC,
                "--name",
                "Insurer A",
                "--url",
                soap_url,
                "--version",
                "00200809",
            )
            bob = write_bob(folder / "State 20261101.txt", [(NAIC, "P-OK", VIN_OK)])
            olv(url, "bob", "load", str(bob), "--report-dir", str(folder))
            olv(url, "users", "add", "officer1", "--role", "officer", stdin=PASSWORD + "\n")
            token = olv(url, "tokens", "create", "officer1").splitlines()[-1]
            # The traffic of every test here goes through one token: its rate limit (shared
            # through the database, not what these tests are about) must not be what answers.
            env = {
                "OLV_DATABASE_URL": url,
                "OLV_PORTAL_WORKERS": "2",
                "OLV_PORTAL_TOKEN_RATE_PER_MINUTE": "6000000",
            }
            with portal_server(env, folder) as portal:
                yield Stack(
                    pg, bouncer, url, soap_url, soap_log, portal.base, portal.log, token, folder
                )
        finally:
            stop_process(soap)


def _traffic(
    stack: Stack, seconds: float, during: Callable[[], None] | None = None, threads: int = 4
) -> tuple[list[tuple[tuple[str, list[str]], float]], list[tuple[str, float]]]:
    """SOAP requests and portal verifications, ``threads`` of each, for ``seconds``;
    ``during`` runs once a second in."""
    soap: list[tuple[tuple[str, list[str]], float]] = []
    portal: list[tuple[str, float]] = []
    end = time.monotonic() + seconds

    def soap_loop() -> None:
        while time.monotonic() < end:
            soap.append(stack.ask_soap())

    def portal_loop() -> None:
        while time.monotonic() < end:
            portal.append(stack.verify())

    with ThreadPoolExecutor(2 * threads) as pool:
        futures = [pool.submit(soap_loop) for _ in range(threads)]
        futures += [pool.submit(portal_loop) for _ in range(threads)]
        if during is not None:
            time.sleep(1.0)
            during()
        for future in futures:
            future.result()
    return soap, portal


def test_every_answer_right_under_concurrent_traffic_and_commands(stack: Stack) -> None:
    """Two SOAP and two portal workers, eight client threads, and the state's daily commands
    running through the same pooler meanwhile: no SYSU, no failed verification."""
    results: dict[str, str] = {}

    def commands() -> None:
        registrations = stack.folder / "registrations.csv"
        registrations.write_text(
            f"{REGISTRATION_HEADER}\n"
            f"ABC123,NY,{VIN_A},1,SMITH,JOHN,A,1980-02-03,,,12207,1 MAIN ST,ALBANY,active\n"
        )
        olv(stack.url, "registrations", "import", str(registrations))
        d = today().date()
        events = write_csv(
            stack.folder / "events.csv",
            [
                row(txn_id="N1", effective_date=str(d - timedelta(400)), plate="ABC123"),
                row(txn_id="X1", type="XLC", effective_date=str(d - timedelta(40)), plate="ABC123"),
            ],
        )  # fmt: skip
        results["load"] = olv(stack.url, "iies", "load", str(events))
        results["run"] = olv(stack.url, "iies", "run", "--date", str(d - timedelta(40)))
        more = write_bob(stack.folder / "State 20261201.txt", [(NAIC, "P-OK", VIN_OK), *_fleet()])
        results["bob"] = olv(stack.url, "bob", "load", str(more), "--report-dir", str(stack.folder))

    worker = threading.Thread(target=commands)
    soap: list[tuple[tuple[str, list[str]], float]] = []
    portal: list[tuple[str, float]] = []
    worker.start()
    while worker.is_alive() or len(soap) < 300 or len(portal) < 150:
        s, p = _traffic(stack, 3.0)
        soap += s
        portal += p
    worker.join()
    assert '"accepted"' in results["load"], results["load"]
    assert '"transactions_matched": 2' in results["run"], results["run"]
    assert "State 20261201.txt: accepted" in results["bob"], results["bob"]
    soap_codes = [codes for codes, _ in soap]
    assert soap_codes.count(CONFIRMED) == len(soap), {str(c) for c in soap_codes}
    verdicts = [verdict for verdict, _ in portal]
    assert verdicts.count("confirmed") == len(portal), set(verdicts)
    pools = stack.bouncer.admin("SHOW POOLS")
    assert any(p[0] == "olv" for p in pools)  # the traffic went through PgBouncer


def _fleet() -> list[tuple[str, str, str]]:
    """A month's change in the book: 2,000 more vehicles (a load that takes a while)."""
    return [(NAIC, f"P-{i}", f"1FLEET{i:011d}") for i in range(2000)]


@pytest.mark.parametrize("fault", ["RECONNECT", "KILL", "restart"])
def test_pooler_dropping_connections_mid_traffic(stack: Stack, fault: str) -> None:
    """The pooler closes every connection while both servers are busy: each answer still comes
    within the budget (Confirmed or SYSU; confirmed, unable_to_verify or a 503), both servers
    say so in their logs, and the same processes answer right again within seconds."""
    soap_log_before = stack.soap_log.stat().st_size
    portal_log_before = stack.portal_log.stat().st_size

    def drop() -> None:
        if fault == "restart":
            stack.bouncer.restart()
        else:
            stack.bouncer.admin(f"{fault} olv")
            if fault == "KILL":
                time.sleep(0.5)
                stack.bouncer.admin("RESUME olv")

    soap, portal = _traffic(stack, 4.0, drop)
    for codes, elapsed in soap:
        assert codes in (CONFIRMED, SYSU)
        assert elapsed <= BUDGET + MARGIN, f"SOAP answered after {elapsed:.2f} s"
    for verdict, elapsed in portal:
        assert verdict in ("confirmed", "unable_to_verify", "HTTP 503"), verdict
        assert elapsed <= BUDGET + MARGIN, f"portal answered after {elapsed:.2f} s"
    # Recovery without a restart: a few seconds later every answer is right again.
    deadline = time.monotonic() + 15
    while True:
        soap, portal = _traffic(stack, 1.0, threads=2)
        if all(c == CONFIRMED for c, _ in soap) and all(v == "confirmed" for v, _ in portal):
            break
        assert time.monotonic() < deadline, "no recovery within 15 s"
    soap_codes, verdicts = [c for c, _ in soap], [v for v, _ in portal]
    assert soap_codes and verdicts
    # Whatever failed was logged in words an operator can act on.
    soap_log = stack.soap_log.read_bytes()[soap_log_before:].decode(errors="replace")
    portal_log = stack.portal_log.read_bytes()[portal_log_before:].decode(errors="replace")
    if fault != "RECONNECT":  # RECONNECT waits for each connection to be released: no error
        assert "policy store lost its database connection" in soap_log, soap_log[-3000:]
        assert "policy store answers again" in soap_log, soap_log[-3000:]
    assert "Traceback" not in soap_log + portal_log
    answered_503 = sum(1 for v, _ in portal if v == "HTTP 503")
    assert portal_log.count("answered 503 on /api/v1/verify") >= answered_503


def test_statement_timeout_holds_per_statement_through_the_pooler(stack: Stack) -> None:
    """No session setting survives a transaction behind the pooler, yet a SOAP read stuck
    behind a lock gives up after the deadline: the timeout travels with each statement."""
    engine = db.make_engine(stack.url, wait_seconds=1.0)
    store = SqlPolicyStore(engine)
    with engine.connect() as conn:  # psycopg prepares nothing: the next server lacks it
        assert conn.connection.driver_connection.prepare_threshold is None  # type: ignore[union-attr]
    with psycopg.connect(
        host="127.0.0.1", port=stack.pg.port, user="postgres", dbname="olv"
    ) as locker:
        locker.execute("LOCK TABLE policy, coverage IN ACCESS EXCLUSIVE MODE")
        released = threading.Timer(15, locker.rollback)  # the test must not hang without it
        released.start()
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.vin_periods(NAIC, VIN_OK)
            assert time.monotonic() - started < 5  # 1 s, not the 15 s the lock is held
            # The same per transaction (the audit writer's inserts).
            started = time.monotonic()
            with pytest.raises(Exception, match="statement timeout"), engine.begin() as conn:
                conn.execute(text("SELECT count(*) FROM policy"))
            assert time.monotonic() - started < 5
        finally:
            released.cancel()
            locker.rollback()
    assert store.vin_periods(NAIC, VIN_OK)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1s"
    store.close()
    engine.dispose()


def test_audit_writes_carry_the_timeout_through_the_pooler(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit writer's COPY, blocked by a lock on its table, is stopped by the server after
    the deadline (and retried), not held for as long as the lock is."""
    monkeypatch.setattr(audit, "WRITE_LIMIT_SECONDS", 60.0)  # its own cut: out of the way
    caplog.set_level(logging.WARNING, logger="service.audit")
    engine = db.make_engine(stack.url, wait_seconds=1.0)
    writer = AuditWriter(engine, flush_seconds=0.1)
    table = AuditRecord.__tablename__
    try:
        with psycopg.connect(
            host="127.0.0.1", port=stack.pg.port, user="postgres", dbname="olv"
        ) as locker:
            before = locker.execute(f"SELECT count(*) FROM {table}").fetchone()
            locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            released = threading.Timer(15, locker.rollback)
            released.start()
            try:
                writer.record(_entry("LOCKED00000000001"))
                deadline = time.monotonic() + 6
                while "audit write failed" not in caplog.text and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert "audit write failed" in caplog.text  # after ~1 s, not 15
            finally:
                released.cancel()
                locker.rollback()
            deadline = time.monotonic() + 10  # retried once the lock is gone: nothing lost
            while time.monotonic() < deadline:
                after = locker.execute(f"SELECT count(*) FROM {table}").fetchone()
                locker.rollback()
                if after and before and after[0] == before[0] + 1:
                    break
                time.sleep(0.2)
            assert after and before and after[0] == before[0] + 1
    finally:
        writer.close()
        engine.dispose()


def _entry(vin: str) -> AuditEntry:
    return AuditEntry(
        today(), "ip:127.0.0.1", "00200809", NAIC, "P-1", vin, "2026-11-01T00:00:00",
        "VEHREG", "Unconfirmed", "PKEY2 VIN1", 1.0,
    )  # fmt: skip


def test_url_without_the_pool_mode_is_refused_at_start_with_a_hint(stack: Stack) -> None:
    """Not an outage to wait out (SYSU until the server is back) but a setting to fix."""
    plain = stack.url.replace("?pool_mode=transaction", "")
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "olv", "soap", "serve", "--port", str(port), "--workers", "1"],
        env={**os.environ, "OLV_DATABASE_URL": plain},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "unsupported startup parameter: options" in result.stderr
    assert "Add ?pool_mode=transaction to OLV_DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://olv@db/olv?pool_mode=statement",
        "sqlite:///olv.db?pool_mode=transaction",
    ],
)
def test_pool_modes_olv_cannot_work_with_are_refused(url: str) -> None:
    with pytest.raises(UnsupportedDatabaseURL, match="pool_mode"):
        db.check_url(url)
