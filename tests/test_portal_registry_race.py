"""Two admins registering the same new NAIC at once (the admin page, ``olv insurers add``):
the one whose insert comes second finds the other's row and updates it, as if the two had come
one after the other — never an IntegrityError (a 500 on the page). SQLite and PostgreSQL.

The race is made exact, not hoped for: the moment the second registration has looked for the
NAIC and found nothing, the first one is made and committed (from a listener on the second's
statements), so the second's insert meets a row that was not there when it looked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select

from olv import db
from olv.config import Settings
from portal import registry
from portal.app import create_app
from portal.models import Insurer, SecurityLog
from portal.settings import PortalSettings
from tests.helpers.portal import add_user

NAIC = "70001"
FIRST = registry.InsurerInput(NAIC, "First Mutual", "http://first.invalid/iicmva", "00200809")
SECOND = registry.InsurerInput(NAIC, "Second Mutual", "http://second.invalid/iicmva", "00200510")


@contextmanager
def first_registered_after_the_second_looked(url: str) -> Iterator[list[bool]]:
    """While open: the first statement anywhere that looks an insurer up by its NAIC (the
    second registration's look) is followed at once by ``FIRST``'s registration, made and
    committed on an engine of its own. Yields the list that gets the first's ``created``."""
    other = db.make_engine(url)
    made: list[bool] = []
    fired = threading.Event()

    def after(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        looks = statement.lstrip().upper().startswith("SELECT") and "FROM insurers" in statement
        if not looks or conn.engine is other or fired.is_set():
            return
        fired.set()
        with db.transaction(other) as session:
            made.append(registry.upsert(session, FIRST, actor="first-admin")[1])

    event.listen(Engine, "after_cursor_execute", after)
    try:
        yield made
    finally:
        event.remove(Engine, "after_cursor_execute", after)
        other.dispose()
    assert fired.is_set(), "the second registration never looked the NAIC up"


def _stored(url: str) -> tuple[Insurer, list[str]]:
    engine = db.make_engine(url)
    try:
        with db.transaction(engine) as session:
            row = session.get(Insurer, NAIC)
            assert row is not None
            said = session.scalars(
                select(SecurityLog.detail)
                .where(SecurityLog.detail.like(f"%insurer {NAIC}"))
                .order_by(SecurityLog.id)
            ).all()
            return row, list(said)
    finally:
        engine.dispose()


def test_the_second_of_two_registrations_updates_the_first(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        with (
            first_registered_after_the_second_looked(db_url) as made,
            db.transaction(engine) as session,
        ):
            _, created = registry.upsert(session, SECOND, actor="second-admin")
    finally:
        engine.dispose()
    assert (made, created) == ([True], False)
    row, said = _stored(db_url)
    assert (row.name, row.url, row.version) == (SECOND.name, SECOND.url, SECOND.version)
    assert said == [f"added insurer {NAIC}", f"updated insurer {NAIC}"]


def test_the_admin_page_saves_the_second_registration_instead_of_failing(db_url: str) -> None:
    engine = db.make_engine(db_url)
    token = add_user(engine, "second-admin", "admin")
    engine.dispose()
    app = create_app(Settings(database_url=db_url), PortalSettings())
    form = {
        "naic": NAIC,
        "name": SECOND.name,
        "url": SECOND.url,
        "version": SECOND.version,
        "enabled": "true",
    }
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, follow_redirects=False, headers=headers) as client:
        client.get("/admin/insurers.json")  # the token checked and cached before the race
        with first_registered_after_the_second_looked(db_url) as made:
            response = client.post("/admin/insurers", data=form)
        assert response.status_code == 303, response.text
        (listed,) = client.get("/admin/insurers.json").json()["insurers"]
    assert made == [True]
    assert (listed["naic"], listed["name"], listed["version"]) == (NAIC, SECOND.name, "00200510")
    row, said = _stored(db_url)
    assert row.url == SECOND.url
    assert said == [f"added insurer {NAIC}", f"updated insurer {NAIC}"]
