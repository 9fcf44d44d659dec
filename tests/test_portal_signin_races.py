"""Sign-in attempts racing each other against a real ``olv portal serve``: the lockout counts
each attempt before its password or code is checked, so however many arrive at once, at most
five are checked and the account locks (both databases). A locked account's API token keeps
working (README: a lockout answers password guessing)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from olv import db
from portal import lockout, secret_key
from portal.models import SecurityLog, User
from portal.settings import PortalSettings
from tests.helpers import loopback
from tests.helpers.portal import portal_server
from tests.helpers.portal_web import sqlite_copy
from tests.helpers.signin import (
    PASSWORD,
    TOTP_SECRET,
    add_person,
    at_once,
    events,
    settled,
    sign_in,
    wrong_code,
)

RACERS = 40
# The race is about counting, not about the 5-second budget: a long one lets every racer wait
# for a hash slot even where an argon2id check takes seconds (a busy machine).
ENV = {"OLV_PORTAL_BUDGET_SECONDS": "30"}
VIN = "1HGCM82633A004352"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return sqlite_copy(sqlite_template, tmp_path, monkeypatch)


def _five(rows: list[SecurityLog]) -> bool:
    return len(rows) >= lockout.MAX_FAILURES


def _unexpected(answers: list[httpx.Response]) -> list[tuple[int, str]]:
    return [(a.status_code, a.text[:200]) for a in answers if a.status_code >= 500][:3]


def _warm_up(base: str) -> None:
    """One sign-in first, so that the race meets a started process (threads, pooled
    connections, compiled templates), not its cold start."""
    answer = loopback.post(f"{base}/login", data={"username": "warm-up", "password": "x" * 12})
    assert answer.status_code == 401


def _user(engine, username: str) -> User:  # type: ignore[no-untyped-def]
    with db.transaction(engine) as session:
        user = session.query(User).filter_by(username=username).one()
        session.expunge(user)
        return user


def test_forty_wrong_passwords_at_once_check_five_and_lock(db_url: str, tmp_path: Path) -> None:
    engine = db.make_engine(db_url)
    token = add_person(engine, "oscar", "officer")
    with portal_server({"OLV_DATABASE_URL": db_url, **ENV}, tmp_path) as portal:
        _warm_up(portal.base)

        async def guess(i: int) -> httpx.Response:
            async with httpx.AsyncClient(
                verify=loopback.TLS, base_url=portal.base, timeout=60
            ) as client:
                form = {"username": "oscar", "password": f"wrong password {i:02d}"}
                return await client.post("/login", data=form)

        answers = at_once(RACERS, guess)
        # 503: a sign-in that did not finish within its budget on a busy machine ("try again")
        assert {a.status_code for a in answers} <= {401, 429, 503}, _unexpected(answers)
        checked = settled(lambda: events(engine, "oscar", "login_failed"), _five)
        assert len(checked) == lockout.MAX_FAILURES, [e.detail for e in checked]
        assert _user(engine, "oscar").locked_at is not None
        assert len(events(engine, "oscar", "lockout")) == 1
        # Locked: the right password does not open it (401 locked, or 429 past the per-name
        # limit of the minute) and is not checked.
        right = loopback.post(
            f"{portal.base}/login", data={"username": "oscar", "password": PASSWORD}
        )
        assert right.status_code in (401, 429) and "olv_session" not in right.cookies
        assert len(events(engine, "oscar", "login_failed")) == lockout.MAX_FAILURES
        # The account's API token goes on working (a lockout is about guessing passwords).
        verify = loopback.post(
            f"{portal.base}/api/v1/verify",
            json={"vin": VIN},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert verify.status_code == 200, verify.text
    engine.dispose()


def test_forty_wrong_codes_at_once_check_five_and_lock(db_url: str, tmp_path: Path) -> None:
    engine = db.make_engine(db_url)
    add_person(engine, "tina", "officer")
    with portal_server({"OLV_DATABASE_URL": db_url, **ENV}, tmp_path) as portal:
        _warm_up(portal.base)
        with httpx.Client(verify=loopback.TLS, base_url=portal.base, timeout=30) as browser:
            first = browser.post("/login", data={"username": "tina", "password": PASSWORD})
            assert first.status_code == 303 and first.headers["location"] == "/login/totp"
            cookies = dict(browser.cookies)
        code = wrong_code()

        async def guess(_: int) -> httpx.Response:
            async with httpx.AsyncClient(
                verify=loopback.TLS, base_url=portal.base, cookies=cookies, timeout=60
            ) as client:
                return await client.post("/login/totp", data={"code": code})

        answers = at_once(RACERS, guess)
        # 401: checked and wrong, or refused (locked / too many at once); 303: the session
        # ended with the lockout, back to /login.
        assert {a.status_code for a in answers} <= {303, 401, 429, 503}, _unexpected(answers)
        checked = settled(lambda: events(engine, "tina", "totp_failed"), _five)
        assert len(checked) == lockout.MAX_FAILURES, [e.detail for e in checked]
        assert _user(engine, "tina").locked_at is not None
    engine.dispose()


def test_totp_secrets_stored_in_plaintext_are_encrypted_when_the_portal_starts(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    add_person(engine, "olga", "officer")
    assert _user(engine, "olga").totp_secret == TOTP_SECRET  # as an older version stored it
    with portal_server({"OLV_DATABASE_URL": db_url}, tmp_path) as portal:
        stored = settled(
            lambda: _user(engine, "olga").totp_secret,
            lambda value: value != TOTP_SECRET,
        )
        assert stored and TOTP_SECRET not in stored
        assert secret_key.load(PortalSettings()).unseal(stored) == TOTP_SECRET
        with sign_in(portal.base, "olga") as browser:  # the code from the same secret works
            assert browser.get("/query").status_code == 200
    engine.dispose()


@pytest.mark.parametrize("name", ["Tr0ub4dor&3-my-password", "oscar "])
def test_a_name_that_is_no_account_is_not_logged_as_typed(
    sqlite_url: str, tmp_path: Path, name: str
) -> None:
    """A password typed into the name field must not land in the security log."""
    engine = db.make_engine(sqlite_url)
    with portal_server({"OLV_DATABASE_URL": sqlite_url}, tmp_path) as portal:
        for _ in range(2):
            answer = loopback.post(
                f"{portal.base}/login", data={"username": name, "password": "x" * 12}
            )
            assert answer.status_code == 401
    with db.transaction(engine) as session:
        rows = session.query(SecurityLog).all()
        logged = [(r.event, r.username, r.detail) for r in rows]
    typed = name.strip()
    assert logged and all(typed not in f"{u} {d}" for _, u, d in logged), logged
    names = {u for _, u, _ in logged}
    assert len(names) == 1 and next(iter(names)).startswith("unknown:"), logged  # one tag
    engine.dispose()
