"""A TOTP code is good once (RFC 6238 §5.2), also when two sign-ins race with the same code:
the claim is one conditional write that the database orders (portal/sessions.py)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from olv import db
from portal import sessions
from portal.models import User
from tests.helpers.portal_web import add_user


def user_id(url: str) -> int:
    add_user(url, "officer1", "officer")
    engine = db.make_engine(url)
    with Session(engine) as session:
        found = session.query(User.id).filter(User.username == "officer1").scalar()
    engine.dispose()
    assert found is not None
    return found


def test_each_step_is_claimed_once_and_never_an_older_one(db_url: str) -> None:
    uid = user_id(db_url)
    engine = db.make_engine(db_url)
    claims = []
    for step in (5, 5, 4, 6, 6):
        with db.transaction(engine) as session:
            claims.append(sessions.claim_totp_step(session, uid, step))
    engine.dispose()
    assert claims == [True, False, False, True, False]


def race(engine: Engine, uid: int, step: int) -> dict[str, bool]:
    """The first claims inside a transaction that stays open a moment; the second claims the
    same step meanwhile."""
    results: dict[str, bool] = {}
    first_in = threading.Event()

    def first() -> None:
        with db.transaction(engine) as session:
            results["first"] = sessions.claim_totp_step(session, uid, step)
            first_in.set()
            time.sleep(0.5)

    def second() -> None:
        first_in.wait(5)
        with db.transaction(engine) as session:
            results["second"] = sessions.claim_totp_step(session, uid, step)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return results


def test_two_sign_ins_racing_with_one_code_pass_once(db_url: str) -> None:
    """For the very first code (both would insert) and for a later one (both would update)."""
    uid = user_id(db_url)
    engine = db.make_engine(db_url)
    try:
        for step in (7, 8):
            assert race(engine, uid, step) == {"first": True, "second": False}, step
    finally:
        engine.dispose()
