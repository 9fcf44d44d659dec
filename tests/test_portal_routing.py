"""The routing engine (SPEC §5 steps 1-5) through the API, with insurers behind the in-memory
transport: what is asked of whom, what wins, what is logged. Real databases (SQLite and
PostgreSQL); the HTTP path to real insurers is in test_portal_api_e2e.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from olv import db
from olv.config import Settings
from olv.iicmva import V0510, V0809, q
from portal import sessions
from portal.app import create_app
from portal.insurer_client import CallFailed, InsurerConfig, MemoryTransport, Reply
from portal.models import InsurerCall, QueryLog, User
from portal.settings import PortalSettings
from tests.helpers.faulty_network import holding_proxy
from tests.helpers.portal import (
    add_insurer,
    add_registration,
    add_user,
    answer,
    fault,
    load_bob,
)

VIN_A = "1HGCM82633A004352"  # BoB: insurer 10001, policy P-A
VIN_B = "2T1BURHE0JC014706"  # BoB: insurer 20002 (00200510), policy P-B
VIN_TWO = "5YJSA1E26HF000337"  # BoB: insurers 10001 and 20002
VIN_DOWN = "1FTFW1ET5DFC10312"  # BoB: insurer 30003, which is down
VIN_UNREG = "3VWFE21C04M000001"  # BoB: insurer 40004, not registered
VIN_NONE = "JH4KA8260MC000000"  # no BoB record

Behaviour = Callable[[dict[str, str]], Awaitable[Reply]]


def parse(body: bytes) -> dict[str, str]:
    root = etree.fromstring(body)
    key = root.find(f".//{q('PolicyKey')}")
    if key is None:
        key = root.find(f".//{q('UniqueKey')}")
    return {
        "naic": root.findtext(f".//{q('NAIC')}"),
        "key": key.text if key is not None else "",
        "vin": root.findtext(f".//{q('VIN')}"),
        "reason": root.findtext(f".//{q('ReasonCode')}"),
        "version": "0809" if root.find(f".//{q('PolicyKey')}") is not None else "0510",
    }


class Insurers:
    """The in-memory insurers: per NAIC a behaviour; records every question."""

    def __init__(self) -> None:
        self.asked: list[dict[str, str]] = []
        self.behaviour: dict[str, Behaviour] = {}

    async def __call__(self, insurer: InsurerConfig, body: bytes) -> Reply:
        question = parse(body)
        self.asked.append(question)
        return await self.behaviour[insurer.naic](question)


def says(version: str, code: str, *reasons: str, delay: float = 0) -> Behaviour:
    async def behave(question: dict[str, str]) -> Reply:
        if delay:
            await asyncio.sleep(delay)
        # As a real insurer does: its answer echoes the NAIC it was asked about.
        return Reply(200, answer(version, code, reasons, naic=question["naic"]))

    return behave


def hangs() -> Behaviour:
    async def behave(_: dict[str, str]) -> Reply:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    return behave


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Insurers, dict[str, str]]]:
    engine = db.make_engine(db_url)
    add_insurer(engine, "10001", "http://a.invalid/iicmva/00200809", accepts_unknown=True)
    add_insurer(engine, "20002", "http://b.invalid/iicmva/00200510", V0510, accepts_unknown=True)
    add_insurer(engine, "30003", "http://c.invalid/iicmva/00200809")
    add_insurer(engine, "60006", "http://f.invalid/iicmva/00200809", accepts_unknown=True)
    load_bob(
        engine,
        tmp_path,
        [
            ("10001", "P-A", VIN_A),
            ("20002", "P-B", VIN_B),
            ("10001", "P-TWO-A", VIN_TWO),
            ("20002", "P-TWO-B", VIN_TWO),
            ("30003", "P-DOWN", VIN_DOWN),
            ("40004", "P-UNREG", VIN_UNREG),
        ],
    )
    add_registration(engine, "ABC123", "ID", VIN_A)
    add_registration(engine, "TWIN1", "ID", VIN_A)
    add_registration(engine, "TWIN1", "WA", VIN_B)
    tokens = {
        role: add_user(engine, f"{role}1", role, "10001" if role == "insurer" else None)
        for role in ("officer", "dmv", "insurer", "admin", "court")
    }
    engine.dispose()
    insurers = Insurers()
    insurers.behaviour = {
        "10001": says(V0809, "Unconfirmed", "VIN1"),
        "20002": says(V0510, "Unconfirmed", "7"),
        "30003": hangs(),
        "60006": says(V0809, "Unconfirmed", "VIN1"),
    }
    app = create_app(
        Settings(database_url=db_url),
        PortalSettings(budget_seconds=1.5),
        transport=MemoryTransport(insurers),
    )
    with TestClient(app) as client:
        yield client, insurers, tokens


def post(client: TestClient, token: str, body: dict) -> dict:
    response = client.post(
        "/api/v1/verify", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_bob_record_routes_to_its_insurer_with_the_policy_number(world) -> None:
    client, insurers, tokens = world
    insurers.behaviour["10001"] = says(V0809, "Confirmed")
    result = post(client, tokens["officer"], {"vin": VIN_A.lower()})
    assert result["status"] == "Confirmed" and result["verdict"] == "confirmed"
    assert (result["naic"], result["insurer"], result["policy_number"]) == (
        "10001",
        "Insurer 10001",
        "P-A",
    )
    assert result["source"] == "insurer" and result["reasons"] == []
    assert result["book_of_business"]["policy_number"] == "P-A"
    # Sent without punctuation (SPEC §5 step 5); shown as on file.
    assert insurers.asked == [
        {"naic": "10001", "key": "PA", "vin": VIN_A, "reason": "VIOL", "version": "0809"}
    ]


def test_plate_resolves_to_vin_and_dmv_defaults_to_vehreg(world) -> None:
    client, insurers, tokens = world
    result = post(client, tokens["dmv"], {"plate": "abc-123"})
    assert result["vin"] == VIN_A
    assert result["verdict"] == "unconfirmed"
    assert result["reasons"] == [
        {"code": "VIN1", "description": "VIN not found", "number": None, "alternatives": []}
    ]
    assert insurers.asked[0]["reason"] == "VEHREG"


def test_plate_in_two_states_needs_plate_state(world) -> None:
    client, _, tokens = world
    headers = {"Authorization": f"Bearer {tokens['officer']}"}
    response = client.post("/api/v1/verify", json={"plate": "TWIN1"}, headers=headers)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "plate_state"
    result = post(client, tokens["officer"], {"plate": "TWIN1", "plate_state": "wa"})
    assert result["vin"] == VIN_B


@pytest.mark.parametrize("plate", ["ABC1\u066323", "ABC\uff11123", "\u00c1ABC123"])
def test_a_plate_with_a_letter_or_digit_of_another_script_is_invalid(world, plate: str) -> None:
    """Such a character is not dropped: ABC1٣23 (an Arabic-Indic three) is not the registered
    ABC123, so nothing is looked up or asked, and the answer names the field."""
    client, insurers, tokens = world
    body = json.dumps({"plate": plate}).encode()
    for content_type in ("application/json", "application/json; charset=utf-8"):
        headers = {"Authorization": f"Bearer {tokens['officer']}", "Content-Type": content_type}
        response = client.post("/api/v1/verify", content=body, headers=headers)
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["plate"]
    assert insurers.asked == []


def test_unknown_plate_is_404_and_logged(world, db_url: str) -> None:
    client, _, tokens = world
    headers = {"Authorization": f"Bearer {tokens['officer']}"}
    response = client.post("/api/v1/verify", json={"plate": "NOPE1"}, headers=headers)
    assert response.status_code == 404
    assert "NOPE1" in response.json()["error"]
    flush(client)
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(select(QueryLog.http_status, QueryLog.plate)).one()
    engine.dispose()
    assert tuple(row) == (404, "NOPE1")


def flush(client: TestClient) -> None:
    """Write the query log now, on the app's own event loop."""
    client.portal.call(client.app.state.query_log.flush)  # type: ignore[union-attr]


def test_0510_numbers_shown_as_names_with_the_number(world) -> None:
    client, _, tokens = world
    result = post(client, tokens["officer"], {"vin": VIN_B})
    assert result["verdict"] == "unconfirmed"
    reason = result["reasons"][0]
    assert (reason["code"], reason["number"]) == ("PKEY2", "7")
    assert set(reason["alternatives"]) == {"NAIC2", "VIN1"}


def test_several_insurers_any_confirmed_wins(world) -> None:
    client, insurers, tokens = world
    insurers.behaviour["10001"] = says(V0809, "Unconfirmed", "PKEY3", delay=0.05)
    insurers.behaviour["20002"] = says(V0510, "Confirmed")
    result = post(client, tokens["officer"], {"vin": VIN_TWO})
    assert result["verdict"] == "confirmed" and result["naic"] == "20002"
    assert sorted(a["naic"] for a in insurers.asked) == ["10001", "20002"]


def test_id_card_path_asks_that_insurer_with_that_key(world) -> None:
    client, insurers, tokens = world
    insurers.behaviour["20002"] = says(V0510, "Confirmed")
    result = post(
        client, tokens["court"], {"vin": VIN_A, "naic": "20002", "policy_number": "CARD-9"}
    )
    assert result["verdict"] == "confirmed" and result["policy_number"] == "CARD-9"
    assert insurers.asked == [
        {
            "naic": "20002",
            "key": "CARD9",  # as typed: CARD-9
            "vin": VIN_A,
            "reason": "TrafficViolation",
            "version": "0510",
        }
    ]


def test_no_record_broadcasts_unknown_first_confirmed_wins_rest_cancelled(world, db_url) -> None:
    client, insurers, tokens = world
    insurers.behaviour["10001"] = hangs()
    insurers.behaviour["20002"] = says(V0510, "Confirmed", delay=0.05)
    started = time.monotonic()
    result = post(client, tokens["officer"], {"vin": VIN_NONE})
    assert time.monotonic() - started < 1.0  # did not wait for the hung one
    assert result["verdict"] == "confirmed" and result["source"] == "broadcast"
    assert result["naic"] == "20002" and result["policy_number"] is None
    assert sorted(a["naic"] for a in insurers.asked) == ["10001", "20002", "60006"]
    assert {a["key"] for a in insurers.asked} == {"UNKNOWN"}
    flush(client)
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        outcomes = dict(conn.execute(select(InsurerCall.naic, InsurerCall.outcome)).all())
    engine.dispose()
    assert outcomes == {"10001": "cancelled", "20002": "ok", "60006": "ok"}


def test_broadcast_nobody_knows_the_vehicle_is_unconfirmed(world) -> None:
    client, _, tokens = world
    result = post(client, tokens["officer"], {"vin": VIN_NONE})
    assert result["verdict"] == "unconfirmed" and result["source"] == "broadcast"
    assert [r["code"] for r in result["reasons"]] == ["VIN1"]


def test_insurer_not_registered_broadcasts_then_bob_evidence(world) -> None:
    client, insurers, tokens = world
    result = post(client, tokens["officer"], {"vin": VIN_UNREG})
    assert {a["key"] for a in insurers.asked} == {"UNKNOWN"}
    assert result["verdict"] == "unable_to_verify"
    assert result["source"] == "book_of_business"
    assert result["book_of_business"]["naic"] == "40004"


def test_hung_insurer_unable_to_verify_with_bob_evidence_within_budget(world) -> None:
    client, _, tokens = world
    started = time.monotonic()
    result = post(client, tokens["officer"], {"vin": VIN_DOWN})
    assert time.monotonic() - started < 1.5
    assert result["status"] == "Unconfirmed" and result["verdict"] == "unable_to_verify"
    assert [r["code"] for r in result["reasons"]] == ["SYSU"]
    assert result["source"] == "book_of_business"
    evidence = result["book_of_business"]
    assert (evidence["naic"], evidence["policy_number"], evidence["effective_date"]) == (
        "30003",
        "P-DOWN",
        "2024-01-01",
    )
    assert evidence["file"].endswith(".txt") and evidence["loaded_at"]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"<html>not soap</html>"),
        Reply(500, fault()),
        Reply(503, b"busy"),
        Reply(200, answer(V0510, "Confirmed")),  # the wrong version's answer
        Reply(200, answer(V0809, "Unconfirmed", "SYSU")),
        Reply(200, b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'),
    ],
    ids=["garbage", "fault", "http-503", "wrong-version", "sysu", "dtd"],
)
def test_unusable_answers_make_the_insurer_unavailable(world, reply: Reply) -> None:
    client, insurers, tokens = world

    async def behave(_: dict[str, str]) -> Reply:
        return reply

    insurers.behaviour["10001"] = behave
    result = post(client, tokens["officer"], {"vin": VIN_A})
    assert result["verdict"] == "unable_to_verify"
    assert result["book_of_business"]["policy_number"] == "P-A"


def test_refused_insurer_is_unavailable(world) -> None:
    client, insurers, tokens = world

    async def refuse(_: dict[str, str]) -> Reply:
        raise CallFailed("refused", "ConnectError")

    insurers.behaviour["10001"] = refuse
    result = post(client, tokens["officer"], {"vin": VIN_A})
    assert result["verdict"] == "unable_to_verify" and result["naic"] == "10001"


def test_batch_in_order_with_per_item_errors(world) -> None:
    client, insurers, tokens = world
    insurers.behaviour["10001"] = says(V0809, "Confirmed", delay=0.05)
    items = [{"vin": VIN_B}, {"plate": "NOPE2"}, {"vin": VIN_A}, {"plate": "ABC123"}]
    response = client.post(
        "/api/v1/verify/batch",
        json={"items": items},
        headers={"Authorization": f"Bearer {tokens['dmv']}"},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r.get("verdict") or r["status"] for r in results] == [
        "unconfirmed",
        404,
        "confirmed",
        "confirmed",
    ]
    assert results[1]["ok"] is False
    assert [r.get("vin") for r in results] == [VIN_B, None, VIN_A, VIN_A]


def test_query_can_be_read_back_by_its_owner_and_admins_only(world) -> None:
    client, _, tokens = world
    result = post(client, tokens["officer"], {"vin": VIN_A, "reason": "ACC"})

    def read(token: str) -> tuple[int, dict]:
        response = client.get(
            f"/api/v1/queries/{result['query_id']}", headers={"Authorization": f"Bearer {token}"}
        )
        return response.status_code, response.json()

    status, record = read(tokens["officer"])
    assert status == 200
    assert (record["vin"], record["reason"], record["verdict"], record["channel"]) == (
        VIN_A,
        "ACC",
        "unconfirmed",
        "api",
    )
    assert read(tokens["admin"])[0] == 200
    assert read(tokens["court"])[0] == 404
    assert read(tokens["insurer"])[0] == 403


def test_a_state_database_that_does_not_answer_is_a_503_within_the_budget(
    world, db_url: str, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL: the real link hangs (a proxy that stops forwarding, mid-query and
    mid-connect), for a cached token and for one the portal has not seen. SQLite cannot hang
    that way; a book-of-business read that SQLite itself keeps busy stands in: cut on the
    event loop (olv/sqlite_inline.py), then waited for on its thread no longer than the
    budget."""
    client, insurers, tokens = world
    insurers.behaviour["10001"] = says(V0809, "Confirmed")
    budget = 1.5  # this app's

    def ask(token: str) -> tuple[int, float]:
        started = time.monotonic()
        response = client.post(
            "/api/v1/verify", json={"vin": VIN_A}, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code != 200:
            assert response.json()["ok"] is False  # the one error shape
        return response.status_code, time.monotonic() - started

    if db.is_sqlite(db_url):
        reads = client.app.state.router.reads

        def hung(cursor: Any, _vin: str) -> None:
            until = time.monotonic() + 2.5
            cursor.connection.create_function("going", 0, lambda: time.monotonic() < until)
            cursor.execute(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE going())"
                " SELECT count(*) FROM c"
            ).fetchall()
            raise AssertionError("the answer should not have waited for this")

        monkeypatch.setattr(reads, "_current", hung)
        status, seconds = ask(tokens["officer"])
        assert status == 503 and seconds < budget
        assert "write on the event loop cut" in caplog.text  # tried there first, and cut
        return

    engine = db.make_engine(db_url)
    with db.transaction(engine) as session:
        officer = session.scalar(select(User.id).where(User.username == "officer1"))
        assert officer is not None
        cookie = sessions.create(session, officer, sessions.STAGE_FULL, sessions.utc_now())
    engine.dispose()

    def page(path: str) -> tuple[int, float]:
        """A signed-in browser: the session cookie is looked up on every request."""
        started = time.monotonic()
        response = client.get(path, cookies={"olv_session": cookie})
        return response.status_code, time.monotonic() - started

    address = (make_url(db_url).host or "127.0.0.1", make_url(db_url).port or 5432)
    with holding_proxy(address) as proxy:
        proxied = make_url(db_url).set(host="127.0.0.1", port=proxy.port)
        app = create_app(
            Settings(database_url=proxied.render_as_string(hide_password=False)),
            PortalSettings(budget_seconds=budget),
            transport=MemoryTransport(insurers),
        )
        with TestClient(app) as proxied_client:
            client = proxied_client  # ask() uses it from here on
            assert ask(tokens["officer"])[0] == 200  # the token is cached, the pool warm
            assert page("/history.json")[0] == 200
            proxy.hold()
            try:
                for token in (tokens["officer"], tokens["court"]):  # cached, then not
                    status, seconds = ask(token)
                    assert status == 503 and seconds < budget + 0.3
                status, seconds = page("/history.json")
                assert status == 503 and seconds < budget + 0.3
            finally:
                proxy.release()
            deadline = time.monotonic() + 15
            while ask(tokens["officer"])[0] != 200:  # and it recovers by itself
                assert time.monotonic() < deadline, "no answer after the link came back"
                time.sleep(0.2)


def test_state_database_refusing_the_lookup_is_503_and_the_pool_recovers(world, db_url) -> None:
    client, insurers, tokens = world
    insurers.behaviour["10001"] = says(V0809, "Confirmed")
    assert post(client, tokens["officer"], {"vin": VIN_A})["verdict"] == "confirmed"
    engine = db.make_engine(db_url)
    with engine.begin() as conn:  # the token stays cached; the lookup's table is gone
        conn.execute(text("ALTER TABLE bob_record RENAME TO bob_record_away"))
    try:
        headers = {"Authorization": f"Bearer {tokens['officer']}"}
        for _ in range(3):  # more than once: a failed connection must not poison the pool
            response = client.post("/api/v1/verify", json={"vin": VIN_A}, headers=headers)
            assert response.status_code == 503, response.text
            body = response.json()
            assert (body["ok"], body["status"]) == (False, 503)
            assert "state database" in body["error"]
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE bob_record_away RENAME TO bob_record"))
        engine.dispose()
    assert post(client, tokens["officer"], {"vin": VIN_A})["verdict"] == "confirmed"
