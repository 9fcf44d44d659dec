"""Two real ``olv portal serve`` processes on one database behave as one portal: a token gets
exactly its rate over both (batch items included), and a revocation or a disable made anywhere
is refused by both within a second. (Sign-ins over two processes: test_portal_shared_signin.py.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
from sqlalchemy import select

from olv import db
from portal.models import User
from tests.helpers import loopback, row_lock
from tests.helpers.portal import CLIENT_LIMITS, UNTHROTTLED, portal_server, two_portals
from tests.helpers.signin import add_person, sign_in

PROBE = "/api/v1/queries/" + "0" * 32  # 404 for a valid token, 401 otherwise
PER_MINUTE = 60  # 1 a second, bursts of 10 (ten seconds' worth)
RATE, BURST = PER_MINUTE / 60, 10
REFUSED_WITHIN = 1.0
SLOWEST_SECONDS = 20.0  # how long the calls may go on for each to be seen past that


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_two_processes_give_a_token_exactly_its_rate(db_url: str, tmp_path: Path) -> None:
    engine = db.make_engine(db_url)
    token = add_person(engine, "dora", "dmv")
    batcher = add_person(engine, "dirk", "dmv")
    engine.dispose()
    rate = {"OLV_PORTAL_TOKEN_RATE_PER_MINUTE": str(PER_MINUTE)}
    with (
        two_portals(db_url, tmp_path, **rate) as portals,
        httpx.Client(verify=loopback.TLS, timeout=30) as client,
    ):
        allowed = {portal.base: 0 for portal in portals}
        first_sent = time.monotonic()
        first_done = last_sent = 0.0
        refused = 0
        while time.monotonic() - first_sent < 3.0:
            for portal in portals:  # alternately
                last_sent = time.monotonic()
                status = client.get(portal.base + PROBE, headers=_bearer(token)).status_code
                first_done = first_done or time.monotonic()
                assert status in (404, 429), status
                allowed[portal.base] += status == 404
                refused += status == 429
        last_done = time.monotonic()
        total = sum(allowed.values())
        # Exactly the one bucket: its burst, then its refill over the time asked (one process
        # each would have given twice that).
        assert total <= BURST + RATE * (last_done - first_sent) + 1, (total, allowed)
        assert total >= BURST + RATE * (last_sent - first_done) - 1, (total, allowed)
        assert all(allowed.values()) and refused, allowed

        # Batch items count against the same bucket, whichever process asks next.
        items = [{"vin": f"1HGCM82633A00{n:04d}"} for n in range(BURST - 2)]
        batch = client.post(
            portals[0].base + "/api/v1/verify/batch",
            json={"items": items},
            headers=_bearer(batcher),
        )
        assert batch.status_code == 200, batch.text
        started = time.monotonic()
        after = [
            client.get(portals[1].base + PROBE, headers=_bearer(batcher)).status_code
            for _ in range(6)
        ]
        took = time.monotonic() - started + batch.elapsed.total_seconds()
        assert after.count(404) <= 2 + RATE * took + 1, after
        assert 429 in after, after


def _calls_while(
    bases: list[str], tokens: list[str], change: Callable[[], None]
) -> tuple[dict[str, list[tuple[float, str, int]]], float]:
    """Use every token on every process at once, call ``change()`` (in a thread), go on for
    1.5 s, and then until each token has been used on each process more than
    :data:`REFUSED_WITHIN` after it; the calls per token (sent at, process, status), with
    ``"started"`` holding when ``change`` was called, and when it returned."""
    calls: dict[str, list[tuple[float, str, int]]] = {token: [] for token in tokens}

    async def run() -> float:
        stop = asyncio.Event()

        async def hammer(client: httpx.AsyncClient, base: str, token: str) -> None:
            while not stop.is_set():
                sent = time.monotonic()
                answer = await client.get(base + PROBE, headers=_bearer(token))
                calls[token].append((sent, base, answer.status_code))

        async with httpx.AsyncClient(
            verify=loopback.TLS, timeout=30, limits=CLIENT_LIMITS
        ) as client:
            tasks = [
                asyncio.create_task(hammer(client, base, token))
                for token in tokens
                for base in bases
                for _ in range(2)
            ]
            await asyncio.sleep(1.5)
            calls["started"] = [(time.monotonic(), "", 0)]
            await asyncio.to_thread(change)
            changed = time.monotonic()
            await asyncio.sleep(1.5)
            # Until every token has been used on every process past the limit, however slow
            # the machine (a loaded one answered no call of the last half second in time).
            while time.monotonic() < changed + SLOWEST_SECONDS and not all(
                any(sent > changed + REFUSED_WITHIN and b == base for sent, b, _ in calls[token])
                for token in tokens
                for base in bases
            ):
                await asyncio.sleep(0.1)
            stop.set()
            await asyncio.gather(*tasks)
        return changed

    changed = asyncio.run(run())
    return calls, changed


def test_a_revocation_or_disable_made_anywhere_is_refused_by_every_process_within_a_second(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    add_person(engine, "ann", "admin")
    by_cli = add_person(engine, "dora", "dmv")
    by_page = add_person(engine, "dave", "dmv")
    kept = add_person(engine, "dan", "dmv")
    with db.transaction(engine) as session:
        dave = session.scalar(select(User.id).where(User.username == "dave"))
    engine.dispose()
    with (
        two_portals(db_url, tmp_path, **UNTHROTTLED) as (first, second),
        sign_in(first.base, "ann") as admin,
    ):

        def change() -> None:
            done = subprocess.run(
                [sys.executable, "-m", "olv", "tokens", "revoke", by_cli.split("_")[1]],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            # Disabled on the first process's admin page; the second has it cached too.
            assert admin.post(f"/admin/users/{dave}/disable").status_code == 303

        calls, changed = _calls_while([first.base, second.base], [by_cli, by_page, kept], change)
    started = calls["started"][0][0]
    for token in (by_cli, by_page):
        for base in (first.base, second.base):
            before = {s for sent, b, s in calls[token] if b == base and sent < started}
            after = {
                s for sent, b, s in calls[token] if b == base and sent > changed + REFUSED_WITHIN
            }
            assert before == {404} and after == {401}, (base, before, after)
    assert {s for sent, _b, s in calls[kept] if sent > changed} == {404}


def writes_held(url: str) -> AbstractContextManager[None]:
    """Another client holds what the rate-limit statement must write (reads still pass):
    PostgreSQL's lock on the table, SQLite's write lock as a long import would hold it."""
    return row_lock.held(url, "LOCK TABLE portal_rate IN EXCLUSIVE MODE", {})


def test_a_database_that_holds_the_rate_limit_gets_a_503_within_the_budget_then_recovers(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    token = add_person(engine, "dora", "dmv")
    engine.dispose()
    env = {"OLV_DATABASE_URL": db_url, "OLV_PORTAL_BUDGET_SECONDS": "1.0"}
    with (
        portal_server(env, tmp_path) as portal,
        httpx.Client(verify=loopback.TLS, base_url=portal.base) as client,
    ):
        assert client.get(PROBE, headers=_bearer(token), timeout=30).status_code == 404
        with writes_held(db_url):
            held = client.get(PROBE, headers=_bearer(token), timeout=30)
            # Fails closed: no answer past the budget, and no request let through uncounted.
            assert held.status_code == 503, held.text
            assert held.elapsed.total_seconds() < 1.0 + 2.0, held.elapsed
            assert "state database" in held.json()["error"]
        assert client.get(PROBE, headers=_bearer(token), timeout=30).status_code == 404
