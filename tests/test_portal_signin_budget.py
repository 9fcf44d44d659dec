"""Sign-in, second factor, enrolment and logout end within the request's 5-second budget
whatever the state database does, against a real ``olv portal serve`` (README: "A hung state
database gives 503 within the budget"; "503 'try again' when its 5-second budget runs out").

- A row lock someone holds on an account (PostgreSQL), or the write lock of the whole file
  (SQLite), makes that account's sign-ins answer 503 in time, counting no failure, and they
  hold no password-hash slot meanwhile: four of them (as many as there are slots, and anyone
  can send them) no longer leave everyone else's sign-in waiting for a slot until its 503.
- A database that stops answering (PostgreSQL behind a link that stops forwarding; SQLite's
  write lock held) gives 503 in time on the second-factor, enrolment and logout pages, even
  with a cookie that names no session, instead of holding a worker thread until the client
  gives up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url

from olv import db
from portal import passwords, security_log, sessions
from portal.models import SecurityLog, User
from tests.helpers import loopback, row_lock
from tests.helpers.faulty_network import holding_proxy
from tests.helpers.portal import PASSWORD, add_user, portal_server
from tests.helpers.portal_web import SAME_ORIGIN, portal_client, sqlite_copy
from tests.helpers.signin import TOTP_SECRET, add_person, wrong_code

IN_TIME = 6.5  # the portal's 5-s budget (its default, which these servers run with), with
# room for a loaded machine


def locked(url: str, username: str) -> AbstractContextManager[None]:
    """PostgreSQL: a row lock on ``username``'s account row. SQLite: the file's write lock."""
    return row_lock.held(
        url, "SELECT id FROM users WHERE username = :name FOR UPDATE", {"name": username}
    )


SignIn = tuple[int, float, httpx.Response]  # status, seconds taken, the answer
Answer = tuple[int | str, float, str | None]  # status (or no answer), seconds, Retry-After


def sign_in_answer(base: str, username: str, password: str) -> SignIn:
    started = time.monotonic()
    answer = loopback.post(
        f"{base}/login", data={"username": username, "password": password}, timeout=40
    )
    return answer.status_code, time.monotonic() - started, answer


def _user(engine: Engine, username: str) -> User:
    with db.transaction(engine) as session:
        user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        session.expunge(user)
        return user


def _sign_in_events(engine: Engine, username: str) -> list[tuple[str, str]]:
    with db.transaction(engine) as session:
        rows = session.scalars(
            select(SecurityLog).where(
                SecurityLog.username == username,
                SecurityLog.event.in_(
                    (security_log.LOGIN_OK, security_log.LOGIN_FAILED, security_log.LOGIN_REFUSED)
                ),
            )
        )
        return [(row.event, row.detail) for row in rows]


def _rate_rows(engine: Engine, key: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM portal_rate WHERE key = :key"), {"key": key}
        )
        return int(found.scalar() or 0)


def test_sign_ins_stuck_on_a_lock_answer_503_in_time_and_hold_no_hash_slot(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    add_person(engine, "dmv1", "dmv")
    add_person(engine, "off1", "officer")
    postgres = not db.is_sqlite(db_url)
    stuck = passwords.HASH_SLOTS  # as many as there are slots: enough to take them all
    with portal_server({"OLV_DATABASE_URL": db_url}, tmp_path) as portal:
        warm = sign_in_answer(portal.base, "off1", "not the password 1")
        assert warm[0] == 401  # a started process: threads, pooled connections, templates

        async def race() -> tuple[list[SignIn], SignIn | None]:
            guesses = [
                asyncio.ensure_future(
                    asyncio.to_thread(sign_in_answer, portal.base, "dmv1", f"wrong password {i}")
                )
                for i in range(stuck)
            ]
            await asyncio.sleep(1.0)  # the stuck ones are in: on the old code, each on a slot
            other = None
            if postgres:
                other = await asyncio.to_thread(sign_in_answer, portal.base, "off1", PASSWORD)
            return list(await asyncio.gather(*guesses)), other

        with locked(db_url, "dmv1"):
            answers, other = asyncio.run(race())
        for status, seconds, answer in answers:
            assert status == 503 and seconds < IN_TIME, (status, seconds, answer.text[:200])
            assert answer.headers.get("retry-after") == "1"
        if other is not None:
            # Someone else signs in meanwhile: the stuck attempts hold none of the slots.
            status, seconds, answer = other
            assert status == 303 and answer.headers["location"] == "/login/totp", answer.text
            assert seconds < IN_TIME
        # SQLite: every sign-in writes, so nobody signs in while the file is locked; once it is
        # free, the attempts answered 503 have left nothing behind that would go on (threads
        # still waiting for the lock, counts made after the answer) and the next one succeeds.
        time.sleep(1.5)
        status, seconds, answer = sign_in_answer(portal.base, "off1", PASSWORD)
        assert status == 303 and seconds < IN_TIME, answer.text[:200]
        # Answered 503, the stuck attempts were not counted as failures, nor logged. (On SQLite
        # they were stopped at their first write, so not even the per-name limit counts them;
        # on PostgreSQL that count was made before the row lock stopped them.)
        assert not _user(engine, "dmv1").failed_logins
        assert _sign_in_events(engine, "dmv1") == []
        if not postgres:
            assert _rate_rows(engine, "signin-name:dmv1") == 0
        status, _, answer = sign_in_answer(portal.base, "dmv1", PASSWORD)
        assert status == 303 and answer.headers["location"] == "/login/totp", answer.text[:200]
    engine.dispose()


def _pending_session(engine: Engine, username: str) -> str:
    """A password-stage session (the cookie's token), last seen two minutes ago: its next use
    touches it, a write."""
    at = sessions.utc_now() - timedelta(minutes=2)
    with db.transaction(engine) as session:
        user_id = session.scalar(select(User.id).where(User.username == username))
        assert user_id is not None
        return sessions.create(session, user_id, sessions.STAGE_PASSWORD, at)


def _ask(base: str, method: str, path: str, cookie: str, form: dict[str, str] | None) -> Answer:
    started = time.monotonic()
    try:
        answer = loopback.request(
            method, f"{base}{path}", cookies={"olv_session": cookie}, data=form, timeout=40
        )
    except httpx.TimeoutException:
        return "no answer", time.monotonic() - started, ""
    return answer.status_code, time.monotonic() - started, answer.headers.get("retry-after")


@contextmanager
def hanging(url: str) -> Iterator[tuple[str, Callable[[], AbstractContextManager[None]]]]:
    """The URL for the portal, and a context in which its database does not answer:
    PostgreSQL behind a link that stops forwarding (mid-query and mid-connect); SQLite with
    its write lock held by another connection (a read still goes on)."""
    if db.is_sqlite(url):
        yield url, lambda: locked(url, "")
        return
    parsed = make_url(url)
    with holding_proxy((parsed.host or "127.0.0.1", parsed.port or 5432)) as proxy:

        @contextmanager
        def hang() -> Iterator[None]:
            proxy.hold()
            try:
                yield
            finally:
                proxy.release()

        yield parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(False), hang


def _all_at_once(
    base: str, asked: list[tuple[str, str, str, dict[str, str] | None]]
) -> list[Answer]:
    async def run() -> list[Answer]:
        return list(await asyncio.gather(*(asyncio.to_thread(_ask, base, *a) for a in asked)))

    return asyncio.run(run())


def test_second_factor_and_logout_answer_503_in_time_when_the_database_hangs(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    add_person(engine, "tina", "officer")  # second factor enrolled
    add_user(engine, "eddie", "officer")  # to enrol at his first sign-in
    postgres = not db.is_sqlite(db_url)
    tina, eddie = _pending_session(engine, "tina"), _pending_session(engine, "eddie")
    code = wrong_code()
    asked = [
        ("GET", "/login/totp", tina, None),
        ("POST", "/login/totp", tina, {"code": code}),
        ("GET", "/login/enrol", eddie, None),
        ("POST", "/login/enrol", eddie, {"code": code}),
        ("POST", "/logout", tina, None),
    ]
    if postgres:
        # No sign-in needed: a cookie that names no session is looked up all the same. (On
        # SQLite that look-up reads, which the write lock does not stop: it answers at once.)
        asked += [("GET", "/login/totp", f"junk{i}", None) for i in range(3)]
        asked += [("POST", "/logout", f"junk{i}", None) for i in range(3)]
    with (
        hanging(db_url) as (served_url, hang),
        portal_server({"OLV_DATABASE_URL": served_url}, tmp_path) as portal,
    ):
        # Warm: pooled connections open, as on a portal in use.
        warm = _all_at_once(portal.base, [("GET", "/login/totp", f"w{i}", None) for i in range(10)])
        assert {status for status, _, _ in warm} == {303}, warm
        with hang():
            answers = _all_at_once(portal.base, asked)
        for (method, path, _, _), (status, seconds, retry) in zip(asked, answers, strict=True):
            assert status == 503 and seconds < IN_TIME, (method, path, status, seconds)
            assert retry == "1", (method, path)
        # The pages work again once the database does, and nothing of the hung requests
        # stayed: the session is still there, the wrong code was not counted.
        deadline = time.monotonic() + 15
        while _ask(portal.base, "GET", "/login/totp", tina, None)[0] != 200:
            assert time.monotonic() < deadline, "no answer after the database came back"
            time.sleep(0.2)
        assert not _user(engine, "tina").failed_logins
        done = loopback.post(
            f"{portal.base}/login/totp",
            cookies={"olv_session": tina},
            data={"code": pyotp.TOTP(TOTP_SECRET).now()},
        )
        assert done.status_code == 303, done.text[:200]
    engine.dispose()


def test_the_steps_give_pooled_sqlite_connections_back_with_their_own_lock_wait(
    sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step waits for SQLite's write lock no longer than its request may; the engine's other
    users (imports share the file) still wait the engine's 30 s on the same connections."""
    url = sqlite_copy(sqlite_template, tmp_path, monkeypatch)
    with portal_client(url) as (client, _):
        assert client.get("/login/totp", cookies={"olv_session": "junk"}).status_code == 303
        form = {"username": "nobody", "password": "not a password"}
        assert client.post("/login", data=form, headers=SAME_ORIGIN).status_code == 401
        engine = client.app.state.engine  # type: ignore[attr-defined]
        pooled = [engine.raw_connection() for _ in range(engine.pool.checkedin())]
        try:
            assert pooled
            for conn in pooled:
                (wait,) = conn.driver_connection.execute("PRAGMA busy_timeout").fetchone()
                assert wait == 30_000
        finally:
            for conn in pooled:
                conn.close()
