"""Signing in to a real ``olv portal serve`` as a browser would, and seeding people whose
second factor the test knows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
import pyotp
from sqlalchemy import Engine, select

from olv import db
from portal.models import SecurityLog, User
from tests.helpers import loopback
from tests.helpers.portal import PASSWORD, add_user

T = TypeVar("T")

# A fixed base32 secret, stored in plaintext before the portal starts: the portal encrypts it.
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def add_person(engine: Engine, username: str, role: str, naic: str | None = None) -> str:
    """A person with password ``PASSWORD``, second factor ``TOTP_SECRET`` and an API token."""
    token = add_user(engine, username, role, naic)
    with db.transaction(engine) as session:
        user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        user.totp_secret = TOTP_SECRET
        user.totp_enrolled = True
    return token


def wrong_code() -> str:
    """A six-digit code that no step near now accepts."""
    totp = pyotp.TOTP(TOTP_SECRET)
    now = datetime.now(UTC)
    near = {totp.at(now + timedelta(seconds=30 * step)) for step in range(-3, 4)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in near)


@contextmanager
def sign_in(base: str, username: str) -> Iterator[httpx.Client]:
    """A client holding a full session (password, then the current TOTP code)."""
    with httpx.Client(verify=loopback.TLS, base_url=base, timeout=30) as client:
        first = client.post("/login", data={"username": username, "password": PASSWORD})
        assert first.status_code == 303 and first.headers["location"] == "/login/totp", first.text
        done = client.post("/login/totp", data={"code": pyotp.TOTP(TOTP_SECRET).now()})
        assert done.status_code == 303, done.text
        yield client


def events(engine: Engine, username: str, event: str) -> list[SecurityLog]:
    with db.transaction(engine) as session:
        return list(
            session.scalars(
                select(SecurityLog).where(
                    SecurityLog.username == username, SecurityLog.event == event
                )
            )
        )


def settled(read: Callable[[], T], done: Callable[[T], bool], seconds: float = 30) -> T:
    """``read()`` once ``done`` holds of it, then once more after the server has had time to
    finish work whose answer was already sent (an answer given up after its budget)."""
    deadline = time.monotonic() + seconds
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    time.sleep(1.0)
    return read()


def at_once(count: int, call: Callable[[int], Awaitable[T]]) -> list[T]:
    """``call(0) … call(count - 1)`` all started together; their results in order."""

    async def run() -> list[T]:
        return list(await asyncio.gather(*(call(i) for i in range(count))))

    return asyncio.run(run())
