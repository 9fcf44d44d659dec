"""Signing in: password + TOTP (enrolled at first login), lockout, rate limit, sessions' idle
and absolute limits, cookie flags and the cross-origin (CSRF) check — SPEC §5 numbers."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select

import portal.sessions  # noqa: F401  (its tables are truncated between PostgreSQL tests)
from olv import db
from portal import lockout, secret_key
from portal.models import SecurityLog, User
from portal.settings import PortalSettings
from tests.helpers.portal_web import (
    PASSWORD,
    SECRET,
    add_user,
    portal_client,
    sign_in,
    sqlite_copy,
)


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return sqlite_copy(sqlite_template, tmp_path, monkeypatch)


def _events(url: str, username: str) -> list[str]:
    engine = db.make_engine(url)
    try:
        with db.transaction(engine) as session:
            return list(
                session.scalars(
                    select(SecurityLog.event)
                    .where(SecurityLog.username == username)
                    .order_by(SecurityLog.id)
                )
            )
    finally:
        engine.dispose()


def _user(url: str, username: str) -> User:
    engine = db.make_engine(url)
    try:
        with db.transaction(engine) as session:
            return session.scalars(select(User).where(User.username == username)).one()
    finally:
        engine.dispose()


def test_first_login_enrols_totp_with_a_qr_code_then_asks_for_it(db_url: str) -> None:
    add_user(db_url, "olivia", "officer")
    with portal_client(db_url) as (client, clock):
        assert client.get("/query").headers["location"] == "/login"  # not signed in
        first = client.post("/login", data={"username": "olivia", "password": PASSWORD})
        assert first.headers["location"] == "/login/enrol"
        enrol = client.get("/login/enrol")
        assert "<svg" in enrol.text and "cdn" not in enrol.text.lower()
        assert client.get("/query").headers["location"] == "/login"  # password alone: no entry
        # finish this enrolment by hand: a wrong code first, then the right one
        match = SECRET.search(enrol.text)
        assert match, enrol.text
        secret = match.group(1)
        wrong = client.post("/login/enrol", data={"code": "000000"})
        assert wrong.status_code == 401 and "not right" in wrong.text
        clock.advance(seconds=30)
        ok = client.post("/login/enrol", data={"code": pyotp.TOTP(secret).at(clock.now)})
        assert ok.status_code == 303 and ok.headers["location"] == "/query"
        assert client.get("/query").status_code == 200
        assert client.post("/logout").headers["location"] == "/login"
        assert client.get("/query").headers["location"] == "/login"
        # next time: the code from the enrolled secret, not a new enrolment
        sign_in(client, clock, "olivia", secret)
        assert client.get("/query").status_code == 200
    user = _user(db_url, "olivia")
    assert user.totp_enrolled and user.failed_logins == 0
    # encrypted at rest with the portal's secret key
    assert user.totp_secret and secret not in user.totp_secret
    assert secret_key.load(PortalSettings()).unseal(user.totp_secret) == secret
    events = _events(db_url, "olivia")
    assert events[:1] == ["user_added"]
    assert {"totp_failed", "totp_enrolled", "login", "logout"} <= set(events)


def test_a_totp_code_is_good_once(sqlite_url: str) -> None:
    add_user(sqlite_url, "dora", "dmv")
    with portal_client(sqlite_url) as (client, clock):
        secret = sign_in(client, clock, "dora")
        client.post("/logout")
        code = pyotp.TOTP(secret).at(clock.now)  # the code just used
        client.post("/login", data={"username": "dora", "password": PASSWORD})
        again = client.post("/login/totp", data={"code": code})
        assert again.status_code == 401
        assert client.get("/batch").headers["location"] == "/login"


def test_five_failures_in_15_minutes_lock_until_an_admin_unlocks(db_url: str) -> None:
    add_user(db_url, "ann", "admin")
    add_user(db_url, "oscar", "officer")
    with portal_client(db_url) as (client, clock):
        secret = sign_in(client, clock, "oscar")
        client.post("/logout")
        for attempt in range(1, 6):
            clock.advance(minutes=2)
            bad = client.post("/login", data={"username": "oscar", "password": "wrong password!"})
            assert bad.status_code == 401
            assert ("locked" in bad.text) == (attempt == 5), attempt
        clock.advance(minutes=30)  # the lock does not wear off
        right = client.post("/login", data={"username": "oscar", "password": PASSWORD})
        assert right.status_code == 401 and "locked" in right.text
        assert _user(db_url, "oscar").locked_at is not None

        sign_in(client, clock, "ann")
        users_page = client.get("/admin/users")
        assert "locked" in users_page.text
        oscar_id = _user(db_url, "oscar").id
        assert client.post(f"/admin/users/{oscar_id}/unlock").status_code == 303
        client.post("/logout")
        sign_in(client, clock, "oscar", secret)
        assert client.get("/query").status_code == 200
    events = _events(db_url, "oscar")
    assert events.count("login_failed") == 5 and "lockout" in events
    assert "login_refused" in events and "user_unlocked" in events


def test_the_lockout_message_does_not_tell_which_names_are_accounts(sqlite_url: str) -> None:
    """A name without an account answers every attempt exactly as a real account does."""
    add_user(sqlite_url, "oscar", "officer")
    with portal_client(sqlite_url) as (client, clock):
        for attempt in range(1, 7):
            clock.advance(minutes=2)
            real = client.post("/login", data={"username": "oscar", "password": "wrong pass 1"})
            made_up = client.post("/login", data={"username": "oskar", "password": "wrong pass 1"})
            assert made_up.status_code == real.status_code == 401
            assert made_up.text.replace("oskar", "oscar") == real.text, attempt
            assert ("locked" in made_up.text) == (attempt >= 5), attempt


def test_failures_spread_over_more_than_15_minutes_do_not_lock(sqlite_url: str) -> None:
    add_user(sqlite_url, "cora", "court")
    with portal_client(sqlite_url) as (client, clock):
        for _ in range(8):
            clock.advance(minutes=4)
            client.post("/login", data={"username": "cora", "password": "not the password"})
        assert _user(sqlite_url, "cora").locked_at is None
        sign_in(client, clock, "cora")
        assert client.get("/history").status_code == 200


def test_wrong_totp_codes_count_towards_the_lockout(sqlite_url: str) -> None:
    add_user(sqlite_url, "tina", "officer")
    with portal_client(sqlite_url) as (client, clock):
        secret = sign_in(client, clock, "tina")
        client.post("/logout")
        client.post("/login", data={"username": "tina", "password": PASSWORD})
        for _ in range(5):
            clock.advance(seconds=5)
            client.post("/login/totp", data={"code": "123456"})
        assert _user(sqlite_url, "tina").locked_at is not None
        client.post("/login", data={"username": "tina", "password": PASSWORD})
        clock.advance(seconds=31)
        late = client.post("/login/totp", data={"code": pyotp.TOTP(secret).at(clock.now)})
        assert late.status_code == 303 and late.headers["location"] == "/login"


def test_login_attempts_per_account_are_rate_limited(sqlite_url: str) -> None:
    with portal_client(sqlite_url) as (client, clock):
        statuses = []
        for _ in range(12):
            clock.advance(seconds=1)
            statuses.append(
                client.post("/login", data={"username": "nobody", "password": "x" * 12}).status_code
            )
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
        clock.advance(minutes=2)
        again = client.post("/login", data={"username": "nobody", "password": "x" * 12})
        assert again.status_code == 401


def test_session_ends_after_30_minutes_idle(db_url: str) -> None:
    add_user(db_url, "ivan", "officer")
    with portal_client(db_url) as (client, clock):
        sign_in(client, clock, "ivan")
        for _ in range(3):  # activity keeps it alive
            clock.advance(minutes=29)
            assert client.get("/query").status_code == 200
        clock.advance(minutes=30)
        assert client.get("/query").headers["location"] == "/login"


def test_session_ends_12_hours_after_login_however_active(db_url: str) -> None:
    add_user(db_url, "abe", "officer")
    with portal_client(db_url) as (client, clock):
        sign_in(client, clock, "abe")
        for _ in range(35):  # 35 × 20 min = 11 h 40 min
            clock.advance(minutes=20)
            assert client.get("/query").status_code == 200
        clock.advance(minutes=20)
        assert client.get("/query").headers["location"] == "/login"


def test_cookie_flags_on_loopback_and_elsewhere(sqlite_url: str) -> None:
    add_user(sqlite_url, "flo", "officer")
    for base, secure in (("http://127.0.0.1", False), ("https://portal.state.example", True)):
        with portal_client(sqlite_url, base_url=base) as (client, _clock):
            response = client.post("/login", data={"username": "flo", "password": PASSWORD})
            cookie = response.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
            assert ("secure" in cookie.split(";")[-1] or "; secure" in cookie) == secure, cookie


CROSS_ORIGIN_CASES = [
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),
    ({"Origin": "https://evil.example"}, 403),
    ({"Origin": "http://127.0.0.1.evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Sec-Fetch-Site": "same-origin"}, 303),
    ({"Sec-Fetch-Site": "none"}, 303),
    ({"Origin": "http://127.0.0.1"}, 303),
    ({}, 303),  # not sent by a browser page: nothing to forge
]


def test_cross_origin_state_changes_are_refused(sqlite_url: str) -> None:
    add_user(sqlite_url, "ann", "admin")
    with portal_client(sqlite_url) as (client, clock):
        sign_in(client, clock, "ann")
        for number, (headers, expected) in enumerate(CROSS_ORIGIN_CASES):
            response = client.post(
                "/admin/users",
                data={"username": f"user{number}", "role": "officer", "password": PASSWORD},
                headers=headers,
            )
            assert response.status_code == expected, headers
            if expected == 403:
                body = response.json()
                assert body["ok"] is False and "cross-origin" in body["error"], body
        # API clients authenticate by bearer token and are exempt (browsers never send one
        # cross-site): past the check, this made-up token is refused as a token (401)
        bearer = client.post(
            "/admin/users",
            data={"username": "mallory", "role": "admin", "password": PASSWORD},
            headers={"Sec-Fetch-Site": "cross-site", "Authorization": "Bearer olv_x_y"},
        )
        assert bearer.status_code == 303 and bearer.headers["location"] == "/login"
        # a cross-site GET changes nothing and is served
        assert (
            client.get("/admin/users", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200
        )
        listed = client.get("/admin/users.json").json()["users"]
    names = {u["username"] for u in listed}
    assert {"user5", "user6", "user7", "user8"} <= names
    assert not names & {"user0", "user1", "user2", "user3", "user4", "mallory"}


def test_disabled_user_is_signed_out_and_cannot_sign_in(sqlite_url: str) -> None:
    add_user(sqlite_url, "ann", "admin")
    add_user(sqlite_url, "dan", "dmv")
    with portal_client(sqlite_url) as (admin, clock), portal_client(sqlite_url) as (dan, dan_clock):
        sign_in(dan, dan_clock, "dan")
        assert dan.get("/history").status_code == 200
        sign_in(admin, clock, "ann")
        dan_id = _user(sqlite_url, "dan").id
        assert admin.post(f"/admin/users/{dan_id}/disable").status_code == 303
        assert dan.get("/history").headers["location"] == "/login"
        refused = dan.post("/login", data={"username": "dan", "password": PASSWORD})
        assert refused.status_code == 401 and "disabled" in refused.text
    assert "user_disabled" in _events(sqlite_url, "dan")


def test_admin_resets_the_second_factor_and_the_person_enrols_again(sqlite_url: str) -> None:
    add_user(sqlite_url, "ann", "admin")
    add_user(sqlite_url, "rita", "court")
    with (
        portal_client(sqlite_url) as (rita, rita_clock),
        portal_client(sqlite_url) as (admin, clock),
    ):
        old = sign_in(rita, rita_clock, "rita")
        sign_in(admin, clock, "ann")
        rita_id = _user(sqlite_url, "rita").id
        assert admin.post(f"/admin/users/{rita_id}/reset-totp").status_code == 303
        assert rita.get("/history").headers["location"] == "/login"  # signed out
        new = sign_in(rita, rita_clock, "rita")  # enrols afresh (asserts the enrol page)
        assert new != old
    assert "totp_reset" in _events(sqlite_url, "rita")


def test_pages_forbid_framing_and_foreign_content(sqlite_url: str) -> None:
    with portal_client(sqlite_url) as (client, _clock):
        page = client.get("/login")
        policy = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert "<script" not in page.text


def test_olv_users_unlock_lifts_a_lockout(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from olv.cli import app

    add_user(sqlite_url, "lou", "officer")
    with portal_client(sqlite_url) as (client, clock):
        for _ in range(5):
            clock.advance(seconds=20)
            client.post("/login", data={"username": "lou", "password": "wrong password!"})
        assert _user(sqlite_url, "lou").locked_at is not None
        result = CliRunner().invoke(app, ["users", "unlock", "lou"])  # OLV_DATABASE_URL: sqlite_url
        assert result.exit_code == 0, result.output
        clock.advance(minutes=1)
        sign_in(client, clock, "lou")
        assert client.get("/query").status_code == 200


def test_a_signed_in_account_has_its_own_rate_limit(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLV_PORTAL_TOKEN_RATE_PER_MINUTE", "1")
    add_user(sqlite_url, "oscar", "officer")
    add_user(sqlite_url, "olga", "officer")
    with portal_client(sqlite_url) as (client, clock):
        sign_in(client, clock, "oscar")
        assert client.get("/history").status_code == 200
        busy = client.get("/history")
        assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
    with portal_client(sqlite_url) as (other, clock):
        sign_in(other, clock, "olga")  # another account is not held back
        assert other.get("/history").status_code == 200


def test_a_spray_of_names_from_one_address_is_slowed_down(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lockout, "SOURCE_ATTEMPTS_PER_MINUTE", 4)
    add_user(sqlite_url, "oscar", "officer")
    with portal_client(sqlite_url) as (client, clock):
        answers = [
            client.post("/login", data={"username": f"name{i}", "password": "wrong pass 1"})
            for i in range(5)
        ]
        assert [a.status_code for a in answers] == [401, 401, 401, 401, 429]
        assert "from your address" in answers[-1].text
        clock.advance(seconds=61)  # the minute has passed
        sign_in(client, clock, "oscar")
        assert client.get("/query").status_code == 200
