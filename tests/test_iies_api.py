"""The enforcement API against a real ``olv portal serve`` (SPEC §6): an insurer token sends
its own transactions (up to 5,000 a call) and reads its own returns only; registrant data is
for DMV staff and admins; hostile bodies are refused whole with the acknowledgement's code."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from enforcement.load import LOCK_BASE
from enforcement.models import IiesTransaction
from enforcement.registrations import import_file
from olv import db
from tests.helpers import loopback, row_lock
from tests.helpers.iies import NAIC, OTHER_NAIC, REGISTRATION_HEADER, VIN_A, csv_text, row
from tests.helpers.portal import add_user, portal_server

IN_TIME = 6.5  # the portal's 5-s budget, with room for a loaded machine
ROLES = {
    "insurer": NAIC,
    "other_insurer": OTHER_NAIC,
    "dmv": None,
    "officer": None,
    "admin": None,
}


@dataclass
class Api:
    base: str
    tokens: dict[str, str]
    url: str

    def call(self, method: str, path: str, who: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kw.pop("headers", {})}
        return loopback.request(method, f"{self.base}{path}", headers=headers, timeout=60, **kw)

    def send(self, who: str, body: bytes) -> httpx.Response:
        headers = {"Content-Type": "text/csv"}
        return self.call("POST", "/api/v1/iies/transactions", who, content=body, headers=headers)

    def stored(self) -> int:
        engine = db.make_engine(self.url)
        try:
            with db.transaction(engine) as session:
                return session.scalar(select(func.count()).select_from(IiesTransaction))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder = tmp_path_factory.mktemp("iies-api")
    engine = db.make_engine(module_db_url)
    try:
        path = folder / "registrations.csv"
        path.write_text(
            f"{REGISTRATION_HEADER}\n"
            f"ABC123,NY,{VIN_A},1,SMITH,JOHN,A,1980-02-03,123456789,,12207,1 MAIN ST,ALBANY,active\n"
        )
        import_file(engine, path)
        tokens = {
            who: add_user(engine, who, "insurer" if naic else who, naic)
            for who, naic in ROLES.items()
        }
    finally:
        engine.dispose()
    with portal_server({"OLV_DATABASE_URL": module_db_url}, folder) as portal:
        yield Api(portal.base, tokens, module_db_url)


def test_an_insurer_sends_and_reads_its_own_returns(api: Api) -> None:
    rows = [row(txn_id="API1", plate="ABC123"), row(txn_id="API2", naic=OTHER_NAIC)]
    response = api.send("insurer", csv_text(rows).encode())
    assert response.status_code == 200, response.text
    ack = response.json()
    assert (ack["status"], ack["naic"], ack["channel"], ack["rows"]) == ("accepted", NAIC, "api", 2)
    mine = api.call("GET", "/api/v1/iies/returns", "insurer").json()
    got = {r["txn_id"]: (r["disposition"], r["codes"]) for r in mine["returns"]}
    assert got["API1"] == ("H", ["H1"]) and got["API2"] == ("E", ["E04"])

    other = api.call("GET", "/api/v1/iies/returns", "other_insurer")
    assert other.status_code == 200 and other.json()["returns"] == []
    nosy = api.call("GET", f"/api/v1/iies/returns?naic={NAIC}", "other_insurer")
    assert nosy.status_code == 403
    dmv = api.call("GET", f"/api/v1/iies/returns?naic={NAIC}", "dmv")
    assert {r["txn_id"] for r in dmv.json()["returns"]} >= {"API1", "API2"}
    assert api.call("GET", "/api/v1/iies/returns", "dmv").status_code == 422


def test_only_insurers_send(api: Api) -> None:
    body = csv_text([row(txn_id="NOPE")]).encode()
    for who in ("officer", "dmv", "admin"):
        assert api.send(who, body).status_code == 403
    assert api.call("GET", "/api/v1/iies/returns?naic=12345", "officer").status_code == 403


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (csv_text([row(txn_id=f"BIG{i}") for i in range(5001)]).encode(), "F06"),
        (b"\x00\x01\x02" * 1000, "F01"),
        (b"vin,plate\nX,Y\n", "F02"),
        (csv_text([row(txn_id="D"), row(txn_id="D")]).encode(), "F07"),
    ],
    ids=["5001-rows", "binary", "header", "duplicate"],
)
def test_a_hostile_call_is_refused_whole(api: Api, body: bytes, code: str) -> None:
    before = api.stored()
    response = api.send("insurer", body)
    assert response.status_code == 422
    assert code in response.json()["error"] and response.json()["errors"][0]["message"] == code
    assert api.stored() == before
    assert api.send("insurer", csv_text([row(txn_id=f"AFTER-{code}")]).encode()).status_code == 200


def test_registrant_data_is_for_dmv_and_admins_only(api: Api) -> None:
    for who in ("dmv", "admin"):
        response = api.call("GET", "/api/v1/iies/registrants?plate=ABC-123&state=NY", who)
        assert response.status_code == 200
        [found] = response.json()
        assert found["registrant"]["last_name"] == "SMITH" and found["vin"] == VIN_A
    for who in ("insurer", "officer"):
        response = api.call("GET", "/api/v1/iies/registrants?plate=ABC123", who)
        assert response.status_code == 403 and "SMITH" not in response.text


def test_a_call_behind_a_loading_file_answers_503_in_time_and_keeps_nothing(api: Api) -> None:
    """The insurer's SFTP file loading under the same per-insurer lock (PostgreSQL), or any
    writer holding SQLite's file: the call waited for it, 19 s and more. It answers 503 within
    its budget, keeps nothing, and the same bytes sent again are loaded."""
    body = csv_text([row(txn_id="WAITED")]).encode()
    before = api.stored()
    if db.is_sqlite(api.url):
        holding = "SELECT 1"  # the helper takes SQLite's write lock for the block
    else:
        holding = f"SELECT pg_advisory_xact_lock({LOCK_BASE + int(NAIC)})"
    with row_lock.held(api.url, holding, {}):
        started = time.monotonic()
        busy = api.send("insurer", body)
        took = time.monotonic() - started
    assert busy.status_code == 503, busy.text
    assert took < IN_TIME, took
    assert api.stored() == before
    done = api.send("insurer", body)
    assert done.status_code == 200 and done.json()["status"] == "accepted", done.text
    assert api.stored() == before + 1
