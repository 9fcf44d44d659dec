"""Revoking a token or disabling its owner, against a real ``olv portal serve`` whose token
cache is kept busy: it takes effect at once when done on the admin pages of that process, and
within 1 second when done elsewhere (the command line; another process:
tests/test_portal_shared_state.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlalchemy import select

from olv import db
from portal.models import User
from tests.helpers import loopback
from tests.helpers.portal import CLIENT_LIMITS, UNTHROTTLED, portal_server
from tests.helpers.signin import add_person, sign_in

# A token-checked read that answers 404 for a valid token (no such query) and 401 otherwise.
PROBE = "/api/v1/queries/" + "0" * 32
HAMMERS = 4
AFTER = 1.5  # seconds of requests after the change
Calls = list[tuple[float, int]]  # (monotonic time the request was sent, status)
REFUSED_WITHIN = 1.0  # seconds: the bound on a change made elsewhere (README)


def _token_id(token: str) -> str:
    return token.split("_")[1]


def _user_id(url: str, username: str) -> int:
    engine = db.make_engine(url)
    try:
        with db.transaction(engine) as session:
            found = session.scalar(select(User.id).where(User.username == username))
            assert found is not None
            return found
    finally:
        engine.dispose()


async def _hammer_while(
    base: str, tokens: list[str], change: Callable[[], Awaitable[None]]
) -> tuple[dict[str, Calls], float]:
    """Use every token from several clients at once, make ``change``, go on for ``AFTER``
    seconds; the calls per token and the moment ``change`` had returned."""
    calls: dict[str, Calls] = {token: [] for token in tokens}
    stop = asyncio.Event()

    async def hammer(client: httpx.AsyncClient, token: str) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            answer = await client.get(PROBE, headers={"Authorization": f"Bearer {token}"})
            calls[token].append((sent, answer.status_code))

    async with httpx.AsyncClient(
        verify=loopback.TLS, base_url=base, timeout=30, limits=CLIENT_LIMITS
    ) as client:
        tasks = [
            asyncio.create_task(hammer(client, token)) for token in tokens for _ in range(HAMMERS)
        ]
        await asyncio.sleep(1.5)  # long enough for background re-checks to be under way
        await change()
        changed = time.monotonic()
        await asyncio.sleep(AFTER)
        stop.set()
        await asyncio.gather(*tasks)
    return calls, changed


def _worked_before(calls: Calls, moment: float) -> bool:
    return any(status == 404 for sent, status in calls if sent < moment)


def _statuses_after(calls: Calls, moment: float) -> set[int]:
    return {status for sent, status in calls if sent > moment}


def test_revoking_or_disabling_on_the_admin_pages_takes_effect_at_once(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    add_person(engine, "ann", "admin")
    revoked = add_person(engine, "dora", "dmv")
    of_disabled = add_person(engine, "dave", "dmv")
    kept = add_person(engine, "dan", "dmv")
    engine.dispose()
    dave = _user_id(db_url, "dave")
    with (
        portal_server({"OLV_DATABASE_URL": db_url, **UNTHROTTLED}, tmp_path) as portal,
        sign_in(portal.base, "ann") as admin,
    ):

        async def change() -> None:
            def on_pages() -> None:
                done = admin.post(f"/admin/tokens/{_token_id(revoked)}/revoke")
                assert done.status_code == 303, done.text
                done = admin.post(f"/admin/users/{dave}/disable")
                assert done.status_code == 303, done.text

            await asyncio.to_thread(on_pages)

        calls, changed = asyncio.run(
            _hammer_while(portal.base, [revoked, of_disabled, kept], change)
        )
    for token in (revoked, of_disabled):
        assert _worked_before(calls[token], changed)
        assert _statuses_after(calls[token], changed) == {401}
    assert _statuses_after(calls[kept], changed) == {404}


def test_a_revocation_or_disable_from_the_command_line_takes_effect_within_a_second(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    revoked = add_person(engine, "dora", "dmv")
    of_disabled = add_person(engine, "dave", "dmv")
    kept = add_person(engine, "dan", "dmv")
    engine.dispose()
    with portal_server({"OLV_DATABASE_URL": db_url, **UNTHROTTLED}, tmp_path) as portal:

        async def change() -> None:
            for command in (
                ["tokens", "revoke", _token_id(revoked)],
                ["users", "disable", "dave"],
            ):
                done = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "olv", *command],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert done.returncode == 0, done.stderr

        calls, changed = asyncio.run(
            _hammer_while(portal.base, [revoked, of_disabled, kept], change)
        )
    for token in (revoked, of_disabled):
        assert _worked_before(calls[token], changed - 1.0)
        assert _statuses_after(calls[token], changed + REFUSED_WITHIN) == {401}
    assert _statuses_after(calls[kept], changed) == {404}
