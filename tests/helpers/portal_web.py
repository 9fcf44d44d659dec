"""Helpers for the portal's page tests: an app on a test database, a clock the test moves,
people of each role, and signing in with the second factor as a browser would."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from fastapi.testclient import TestClient

from olv import db
from olv.config import Settings, get_settings
from portal import users
from portal.app import create_app
from portal.settings import PortalSettings

PASSWORD = "correct horse battery staple 42"
BASE = "http://127.0.0.1"
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


@dataclass
class Clock:
    """Stands in for ``datetime.now(UTC)`` in the pages (``app.state.clock``)."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 3, 9, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@contextmanager
def portal_client(url: str, *, base_url: str = BASE) -> Iterator[tuple[TestClient, Clock]]:
    app = create_app(Settings(database_url=url), PortalSettings())
    clock = Clock()
    app.state.clock = clock
    # Browsers ask for HTML; the error handlers answer pages in HTML (and 401 as a redirect).
    headers = {"Accept": "text/html,application/xhtml+xml"}
    with TestClient(app, base_url=base_url, follow_redirects=False, headers=headers) as client:
        yield client, clock


def add_user(url: str, username: str, role: str, naic: str | None = None) -> None:
    engine = db.make_engine(url)
    try:
        with db.transaction(engine) as session:
            users.add(session, username, role, PASSWORD, naic=naic)
    finally:
        engine.dispose()


SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')


def sign_in(
    client: TestClient,
    clock: Clock,
    username: str,
    secret: str | None = None,
    password: str = PASSWORD,
) -> str:
    """Password, then the second factor (enrolling when ``secret`` is None); returns the secret."""
    response = client.post(
        "/login", data={"username": username, "password": password}, headers=SAME_ORIGIN
    )
    assert response.status_code == 303, response.text
    if secret is None:
        assert response.headers["location"] == "/login/enrol"
        page = client.get("/login/enrol")
        assert page.status_code == 200
        match = SECRET.search(page.text)
        assert match, page.text
        secret = match.group(1)
        target = "/login/enrol"
    else:
        assert response.headers["location"] == "/login/totp"
        target = "/login/totp"
    clock.advance(seconds=31)  # a code is good once: each sign-in uses a fresh time step
    code = pyotp.TOTP(secret).at(clock.now)
    done = client.post(target, data={"code": code}, headers=SAME_ORIGIN)
    assert done.status_code == 303, done.text
    return secret


def sqlite_copy(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh migrated SQLite database (exported as OLV_DATABASE_URL): SQLite only, for page behaviour that does not depend on the database engine (the SQL of
    sign-in, sessions and lockout runs on both engines through ``db_url`` elsewhere)."""
    path = tmp_path / "olv.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("OLV_DATABASE_URL", url)
    get_settings.cache_clear()
    return url
