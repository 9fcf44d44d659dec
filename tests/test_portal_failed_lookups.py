"""Made-up credentials from one address stop costing database reads (portal.failed_lookups):
past the allowance, unknown tokens get 429 with Retry-After and unknown session cookies count
as none, while the credentials the process already knows keep working from that address."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from olv import db
from portal.errors import ApiError
from portal.failed_lookups import FailedLookups
from tests.helpers import loopback
from tests.helpers.portal import PASSWORD, Portal, add_user, portal_server
from tests.helpers.signin import add_person, sign_in

ALLOWED = 5
BUDGET = 2.0  # a look-up that waits on a lock gives up (503) after about this
OTHER = "127.0.0.2"  # another client address, on the loopback interface too
# Well-shaped (olv_<12 hex>_<secret>) but issued to nobody: each one is looked up.
MADE_UP = [f"olv_{i:012x}_{'x' * 30}" for i in range(ALLOWED + 3)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_allowance_refills_at_its_rate_and_says_when() -> None:
    clock = Clock()
    failures = FailedLookups(per_minute=6, clock=clock)  # one a 10 s
    for _ in range(6):
        failures.refuse_when_over("198.51.100.7")
        failures.failed("198.51.100.7")
    with pytest.raises(ApiError) as refused:
        failures.refuse_when_over("198.51.100.7")
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "10"}
    failures.refuse_when_over("198.51.100.8")  # another address is untouched
    clock.now += 4
    with pytest.raises(ApiError) as later:
        failures.refuse_when_over("198.51.100.7")
    assert later.value.headers == {"Retry-After": "6"}
    clock.now += 6
    failures.refuse_when_over("198.51.100.7")  # one look-up's worth is back
    failures.failed("198.51.100.7")
    assert failures.over("198.51.100.7")
    assert not failures.over(None)  # no network address: nothing to count
    failures.failed(None)


def test_the_memory_it_keeps_is_bounded() -> None:
    failures = FailedLookups(per_minute=1, max_addresses=3, clock=Clock())
    for i in range(5):
        failures.failed(f"203.0.113.{i}")
    # The two least recently failing addresses were forgotten: a full allowance again.
    assert [failures.over(f"203.0.113.{i}") for i in range(5)] == [False, False, True, True, True]
    for i in range(5):
        failures.passed(f"cookie-{i}")
    assert [failures.vouched(f"cookie-{i}") for i in range(5)] == [False, False, True, True, True]


@pytest.fixture
def throttled(db_url: str, tmp_path: Path) -> Iterator[Portal]:
    """A portal with a small allowance of failed look-ups, and an officer, "oscar", who can
    sign in to it (password, then second factor)."""
    engine = db.make_engine(db_url)
    add_person(engine, "oscar", "officer")
    engine.dispose()
    with portal_server(_env(db_url), tmp_path) as portal:
        yield portal


def _env(url: str) -> dict[str, str]:
    return {
        "OLV_DATABASE_URL": url,
        "OLV_PORTAL_FAILED_LOOKUPS_PER_MINUTE": str(ALLOWED),
        "OLV_PORTAL_BUDGET_SECONDS": str(BUDGET),
    }


def _client(base: str) -> httpx.Client:
    return httpx.Client(verify=loopback.TLS, base_url=base, timeout=30)


def _from_other_address(base: str) -> httpx.Client:
    transport = httpx.HTTPTransport(verify=loopback.TLS, local_address=OTHER)
    return httpx.Client(transport=transport, base_url=base, timeout=30)


@contextmanager
def _locked_against_reads(url: str, table: str) -> Iterator[None]:
    """PostgreSQL: ``table`` locked against every read, by another connection, for the block."""
    held, release = threading.Event(), threading.Event()
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def hold() -> None:
        with psycopg.connect(conninfo) as conn:
            conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)
            conn.rollback()

    locker = threading.Thread(target=hold)
    locker.start()
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()
        locker.join(30)


def test_made_up_tokens_from_one_address_stop_reaching_the_database(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    known = add_user(engine, "dora", "dmv")
    unseen = add_user(engine, "otto", "dmv")
    engine.dispose()
    with (
        portal_server(_env(db_url), tmp_path) as portal,
        _client(portal.base) as client,
    ):

        def verify(token: str) -> httpx.Response:
            # A body that does not validate: 422 once the token is accepted, before any
            # insurer is asked.
            return client.post(
                "/api/v1/verify", json={}, headers={"Authorization": f"Bearer {token}"}
            )

        assert verify(known).status_code == 422  # looked up once, now in the process's cache
        answers = [verify(token) for token in MADE_UP]
        assert [a.status_code for a in answers] == [401] * ALLOWED + [429] * 3
        refused = answers[-1]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60 // ALLOWED
        assert "unknown tokens or sessions from this address" in refused.json()["error"]
        # A malformed token is refused by its shape alone, as before: 401, not counted.
        assert verify("not-a-token").status_code == 401
        # The token the process knows still works from the throttled address; one it has
        # never looked up waits for the allowance like the made-up ones.
        assert verify(known).status_code == 422
        assert verify(unseen).status_code == 429

        if not db.is_sqlite(db_url):
            # Proof that a refused token costs no read: with the token table locked against
            # every read, a look-up would wait out the request's budget (503); the throttled
            # answer comes at once.
            with _locked_against_reads(db_url, "api_tokens"):
                started = time.monotonic()
                assert verify(MADE_UP[0]).status_code == 429
                assert time.monotonic() - started < 1.0
                # The control: from an address with its allowance, the same token is looked
                # up, and the lock holds the look-up to the end of its budget.
                with _from_other_address(portal.base) as other:
                    started = time.monotonic()
                    looked_up = other.post(
                        "/api/v1/verify",
                        json={},
                        headers={"Authorization": f"Bearer {MADE_UP[0]}"},
                    )
                    assert looked_up.status_code == 503, looked_up.text
                    assert time.monotonic() - started > BUDGET / 2


def test_made_up_session_cookies_count_as_none_and_signed_in_people_keep_theirs(
    db_url: str, throttled: Portal
) -> None:
    portal = throttled
    with (
        sign_in(portal.base, "oscar") as officer,
        _client(portal.base) as stranger,
    ):
        for i in range(ALLOWED + 2):
            stranger.cookies.set("olv_session", f"made-up-session-{i}")
            # Unknown cookie: the home page sends to the sign-in form, whether the cookie
            # was looked up or (past the allowance) not.
            home = stranger.get("/", follow_redirects=False)
            assert home.status_code == 303 and home.headers["location"] == "/login"
        # Past the allowance the sign-in form still opens for a stale cookie.
        assert stranger.get("/login").status_code == 200
        # The officer's cookie was issued by this process: it passes the throttled address.
        page = officer.get("/", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"] != "/login"

        if not db.is_sqlite(db_url):
            # Proof that a cookie past the allowance costs no read: with the sessions
            # table locked against every read, a look-up would wait out the budget (503).
            with _locked_against_reads(db_url, "portal_session"):
                started = time.monotonic()
                home = stranger.get("/", follow_redirects=False)
                assert home.status_code == 303 and home.headers["location"] == "/login"
                assert time.monotonic() - started < 1.0
                with _from_other_address(portal.base) as other:  # the control, as above
                    other.cookies.set("olv_session", "made-up-session-0")
                    started = time.monotonic()
                    assert other.get("/", follow_redirects=False).status_code == 503
                    assert time.monotonic() - started > BUDGET / 2


# The pages of the second sign-in step read the cookie's half-open session (GET) or check a
# code against it (POST); with no such session they send back to the sign-in form.
SECOND_STEP = [("GET", "/login/totp"), ("GET", "/login/enrol"), ("POST", "/login/totp")]


def test_made_up_cookies_on_the_second_sign_in_step_stop_reaching_the_database(
    db_url: str, throttled: Portal
) -> None:
    portal = throttled
    with (
        _client(portal.base) as stranger,
        _client(portal.base) as oscar,
    ):

        def send(client: httpx.Client, method: str, path: str) -> httpx.Response:
            data = {"code": "000000"} if method == "POST" else None
            return client.request(method, path, data=data, follow_redirects=False)

        for i in range(ALLOWED + 2):
            stranger.cookies.set("olv_session", f"made-up-half-session-{i}")
            method, path = SECOND_STEP[i % len(SECOND_STEP)]
            answer = send(stranger, method, path)
            assert answer.status_code == 303 and answer.headers["location"] == "/login"
        # Someone behind the same address signs in now: the half-open session's cookie was
        # issued by this process, so the second step opens for it, past the allowance.
        first = oscar.post("/login", data={"username": "oscar", "password": PASSWORD})
        assert first.status_code == 303 and first.headers["location"] == "/login/totp"
        assert oscar.get("/login/totp").status_code == 200

        if not db.is_sqlite(db_url):
            # Proof that the throttled cookies cost no read, each page in turn, with the
            # sessions table locked against every read; and the control from an address with
            # its allowance, whose look-up waits out the budget.
            with _locked_against_reads(db_url, "portal_session"):
                for method, path in SECOND_STEP:
                    started = time.monotonic()
                    answer = send(stranger, method, path)
                    assert answer.status_code == 303 and answer.headers["location"] == "/login"
                    assert time.monotonic() - started < 1.0, (method, path)
                with _from_other_address(portal.base) as other:
                    other.cookies.set("olv_session", "made-up-half-session-0")
                    started = time.monotonic()
                    assert send(other, "GET", "/login/totp").status_code == 503
                    assert time.monotonic() - started > BUDGET / 2
