"""A state database that does not answer: every signed-in request gets its 503 within its
budget from arrival, keeping the reserve a verification keeps for writing its answer — the
reads (the query read-back, the history, compliance, the book of business, a batch) as well as
``POST /api/v1/verify``, not only once the whole budget has passed.

PostgreSQL: the link hangs (a proxy that stops forwarding). SQLite cannot hang that way; another
connection holding the write lock stands in (the rate limit's statement, on every request, is a
write).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from olv import db
from olv.config import Settings
from portal.app import create_app
from portal.settings import PortalSettings
from tests.helpers.faulty_network import holding_proxy
from tests.helpers.portal import add_user

BUDGET = 2.0  # this app's OLV_PORTAL_BUDGET_SECONDS
PROBES = [
    ("GET", "/api/v1/queries/0123456789abcdef0123456789abcdef", None),
    ("GET", "/history.json", None),
    ("GET", "/compliance.json", None),
    ("GET", "/bob", None),
    ("POST", "/api/v1/verify", {"vin": "1HGCM82633A004352"}),
    ("POST", "/api/v1/verify/batch", {"items": [{"vin": "1HGCM82633A004352"}]}),
]


@dataclass
class Stall:
    url: str  # what the portal connects to
    hold: Callable[[], None]  # the database stops answering it
    release: Callable[[], None]  # and answers again


@contextmanager
def _stallable(url: str) -> Iterator[Stall]:
    if db.is_sqlite(url):
        holder = sqlite3.connect(make_url(url).database or "", isolation_level=None)

        def hold() -> None:
            holder.execute("BEGIN IMMEDIATE")  # the write lock, until released

        def release() -> None:
            if holder.in_transaction:
                holder.execute("ROLLBACK")

        try:
            yield Stall(url, hold, release)
        finally:
            release()
            holder.close()
        return
    parsed = make_url(url)
    with holding_proxy((parsed.host or "127.0.0.1", parsed.port or 5432)) as proxy:
        proxied = parsed.set(host="127.0.0.1", port=proxy.port)
        yield Stall(proxied.render_as_string(hide_password=False), proxy.hold, proxy.release)


def test_a_hung_database_is_a_503_within_the_budget_on_every_read(db_url: str) -> None:
    engine = db.make_engine(db_url)
    token = add_user(engine, "admin1", "admin")  # admins may do every probe
    engine.dispose()
    with _stallable(db_url) as stall:
        app = create_app(Settings(database_url=stall.url), PortalSettings(budget_seconds=BUDGET))
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        with TestClient(app, headers=headers) as client:
            for method, path, body in PROBES:  # the token cached, the connections open
                assert client.request(method, path, json=body).status_code < 500, path
            stall.hold()
            answers = {}
            try:
                for method, path, body in PROBES:
                    started = time.monotonic()
                    response = client.request(method, path, json=body)
                    answers[path] = (response.status_code, round(time.monotonic() - started, 2))
            finally:
                stall.release()  # before the portal stops: it writes its query log then
    assert all(status == 503 for status, _ in answers.values()), str(answers)
    # Within the budget (its 503 used to leave only once the whole budget had passed), and not
    # at once: the database was waited for until the reserve.
    assert all(BUDGET - 1.0 < seconds < BUDGET for _, seconds in answers.values()), str(answers)
