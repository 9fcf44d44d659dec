"""Sign-ins over two real ``olv portal serve`` processes on one database: sign-in throttles and
the lockout count attempts made on either, a spray from one address is limited over both, and
a session signed out on one is refused by the other. (Apart from test_portal_shared_state.py so
that the two files, each starting two portals per test, can run on different workers.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import select

from olv import db
from portal import lockout
from portal.models import User
from tests.helpers import loopback
from tests.helpers.portal import PASSWORD, two_portals
from tests.helpers.signin import add_person, sign_in


def _officer(db_url: str, username: str) -> None:
    engine = db.make_engine(db_url)
    add_person(engine, username, "officer")
    engine.dispose()


def _login(client: httpx.Client, base: str, username: str, password: str) -> httpx.Response:
    return client.post(base + "/login", data={"username": username, "password": password})


def test_sign_in_throttles_and_the_lockout_count_attempts_on_both_processes(
    db_url: str, tmp_path: Path
) -> None:
    _officer(db_url, "lou")
    with (
        two_portals(db_url, tmp_path) as portals,
        httpx.Client(verify=loopback.TLS, timeout=60) as client,
    ):
        bases = [portal.base for portal in portals] * 10
        # Five wrong passwords, alternately, lock the account: the right one is then refused
        # on either process.
        for base in bases[: lockout.MAX_FAILURES]:
            assert _login(client, base, "lou", "wrong password!").status_code == 401
        for base in bases[:2]:
            locked = _login(client, base, "lou", PASSWORD)
            assert locked.status_code == 401 and "locked" in locked.text
        engine = db.make_engine(db_url)
        try:
            with db.transaction(engine) as session:
                user = session.scalar(select(User).where(User.username == "lou"))
                assert user is not None and user.locked_at is not None
        finally:
            engine.dispose()
        # Attempts for one name are limited per minute over both processes.
        statuses = [
            _login(client, base, "nobody", "x" * 12).status_code
            for base in bases[: lockout.ATTEMPTS_PER_MINUTE + 2]
        ]
        assert statuses == [401] * lockout.ATTEMPTS_PER_MINUTE + [429, 429], statuses


def test_a_sign_in_spray_from_one_address_is_limited_over_both_processes(
    db_url: str, tmp_path: Path
) -> None:
    limit = lockout.SOURCE_ATTEMPTS_PER_MINUTE
    with two_portals(db_url, tmp_path) as portals:

        async def spray() -> list[int]:
            # A few at a time: each attempt reaches the count long before its budget ends.
            gate = asyncio.Semaphore(4)
            async with httpx.AsyncClient(verify=loopback.TLS, timeout=120) as client:

                async def one(i: int) -> int:
                    base = portals[i % 2].base
                    form = {"username": f"name{i}", "password": "wrong pass 1"}
                    async with gate:
                        return (await client.post(base + "/login", data=form)).status_code

                return list(await asyncio.gather(*(one(i) for i in range(limit + 20))))

        statuses = asyncio.run(spray())
    # Exactly the limit passed over both processes. A sign-in that found no hash slot within
    # its budget is a 503, after it was counted (the limit counts attempts, not checks).
    assert statuses.count(429) == 20, statuses
    assert set(statuses) <= {401, 429, 503}


def test_a_session_signed_out_on_one_process_is_refused_by_the_other(
    db_url: str, tmp_path: Path
) -> None:
    _officer(db_url, "oscar")
    with two_portals(db_url, tmp_path) as (first, second), sign_in(first.base, "oscar") as one:
        cookies = dict(one.cookies)
        with httpx.Client(
            verify=loopback.TLS, base_url=second.base, cookies=cookies, timeout=30
        ) as other:
            assert other.get("/history").status_code == 200
            out = one.post("/logout")
            assert out.status_code == 303, (out.status_code, out.text)
            assert other.get("/history").status_code == 401
            assert other.get("/api/v1/queries/" + "0" * 32).status_code == 401
