"""The query and batch pages against a real ``olv soap serve`` insurer (both IICMVA versions),
seeded by the demo's own seeding code: the verdict shown large, reasons in plain English, the
book-of-business evidence, and the page agreeing with ``POST /api/v1/verify``."""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

import portal.sessions  # noqa: F401  (its tables are truncated between PostgreSQL tests)
from portal import demo as portal_demo
from tests.helpers.portal import demo_world
from tests.helpers.portal_web import Clock, portal_client, sign_in


@pytest.fixture(scope="module")
def seeded(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo world: insurer store, a SOAP service on it, insurers registered, BoB, plates
    (shared by this module's tests, which only add queries)."""
    with demo_world(module_db_url, tmp_path_factory.mktemp("world")):
        yield module_db_url


_sign_ins = itertools.count()


def _sign_in(client: TestClient, clock: Clock, username: str) -> None:
    # A TOTP code is good once per person: each sign-in here takes a later time step.
    clock.now = datetime.now(UTC) + timedelta(minutes=next(_sign_ins))
    sign_in(client, clock, username, portal_demo.TOTP_SECRET, portal_demo.PASSWORD)


def test_query_page_shows_the_verdict_reasons_and_evidence(seeded: str) -> None:
    with portal_client(seeded) as (client, clock):
        _sign_in(client, clock, "officer")
        form = client.get("/query")
        assert form.status_code == 200 and 'name="plate"' in form.text

        confirmed = client.post("/query", data={"plate": "demo 1"})
        assert confirmed.status_code == 200
        assert 'class="verdict confirmed"' in confirmed.text and "CONFIRMED" in confirmed.text
        assert "Demo Insurance Company" in confirmed.text and "DEMO-1001" in confirmed.text
        assert 'id="evidence"' in confirmed.text and "Demo 99999" in confirmed.text

        cancelled = client.post("/query", data={"plate": "DEMO2", "plate_state": "id"})
        assert 'class="verdict unconfirmed"' in cancelled.text
        assert "Policy found but not in force on the verification date" in cancelled.text  # PKEY3

        review = client.post("/query", data={"vin": "5YJSA1E26HF000337"})
        assert "Policy under manual review" in review.text  # POL1

        broadcast = client.post("/query", data={"plate": "DEMO4"})
        assert 'class="verdict unconfirmed"' in broadcast.text
        assert "broadcast" in broadcast.text and "No record for this vehicle" in broadcast.text

        unknown = client.post("/query", data={"plate": "NOSUCH"})
        assert unknown.status_code == 404 and 'class="flash error"' in unknown.text
        assert 'value="NOSUCH"' in unknown.text  # what was typed is kept

        empty = client.post("/query", data={"naic": "12"})
        assert empty.status_code == 422 and "plate or a VIN" in empty.text
        future = client.post("/query", data={"vin": "1HGCM82633A004352", "date": "2999-01-01"})
        assert future.status_code == 422 and "future" in future.text


def test_query_page_and_api_render_the_same_result(seeded: str) -> None:
    with portal_client(seeded) as (client, clock):
        _sign_in(client, clock, "admin")
        page = client.post("/query.json", data={"plate": "DEMO1"}).json()
        api = client.post("/api/v1/verify", json={"plate": "DEMO1"}).json()
        for result in (page, api):
            assert result.pop("query_id") and result.pop("elapsed_ms") >= 0
        assert page == api
        assert page["verdict"] == "confirmed" and page["source"] == "insurer"
        assert page["book_of_business"]["policy_number"] == "DEMO-1001"
        history = client.get("/history.json?username=admin").json()["rows"]
        assert [r["channel"] for r in history] == ["api", "page"]


def test_a_plate_typed_with_another_scripts_character_is_refused_not_read_as_another(
    seeded: str,
) -> None:
    """DEMO٣1 (an Arabic-Indic three), DEMO７1 (a full-width seven) and DÉMO1 are not DEMO1,
    which the demo insurer confirms: the page refuses them, naming the plate, and asks no one."""
    with portal_client(seeded) as (client, clock):
        _sign_in(client, clock, "officer")
        for plate in ("DEMO\u06631", "DEMO\uff171", "D\u00c9MO1"):
            page = client.post("/query", data={"plate": plate})
            assert page.status_code == 422, page.text
            assert "plate:" in page.text and "verdict confirmed" not in page.text
            shown = client.post("/query.json", data={"plate": plate})
            assert shown.status_code == 422 and "plate" in shown.text
        upload = "plate,state\nDEMO1,ID\nDEMO\u06631,ID\n"
        with_batch = client.post("/batch", files={"file": ("p.csv", upload, "text/csv")})
    assert with_batch.status_code == 403  # an officer may not send batches; a DMV clerk may:
    with portal_client(seeded) as (clerk, clock):
        _sign_in(clerk, clock, "dmv")
        response = clerk.post("/batch", files={"file": ("p.csv", upload, "text/csv")})
        rows = list(csv.DictReader(io.StringIO(response.text)))
    assert response.status_code == 200 and len(rows) == 2, response.text
    assert rows[0]["verdict"] == "confirmed"
    assert "plate" in rows[1]["error"] and not rows[1]["verdict"]


def test_batch_page_answers_row_for_row(seeded: str) -> None:
    upload = "plate,state\nDEMO1,ID\nDEMO2,ID\nNOSUCH,ID\nDEMO3,idaho\n"
    with portal_client(seeded) as (client, clock):
        _sign_in(client, clock, "dmv")
        assert client.get("/batch").status_code == 200
        response = client.post("/batch", files={"file": ("plates.csv", upload, "text/csv")})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["row"] for r in rows] == ["1", "2", "3", "4"]
        assert [r["verdict"] for r in rows[:2]] == ["confirmed", "unconfirmed"]
        assert rows[0]["naic"] == "99999" and rows[0]["query_id"]
        assert "not registered" in rows[2]["error"] and not rows[2]["verdict"]
        assert "plate_state" in rows[3]["error"]

        vins = "1HGCM82633A004352\n5YJSA1E26HF000337\n"  # no header: one VIN per row
        response = client.post("/batch", files={"file": ("vins.csv", vins, "text/csv")})
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["vin"], r["verdict"]) for r in rows] == [
            ("1HGCM82633A004352", "confirmed"),
            ("5YJSA1E26HF000337", "unconfirmed"),
        ]
        three = client.post("/batch", files={"file": ("x.csv", "a,b,c\n", "text/csv")})
        assert three.status_code == 422 and "VIN or plate,state" in three.text
        extra = client.post("/batch", files={"file": ("x.csv", "vin,colour\nX,red\n", "text/csv")})
        assert extra.status_code == 422 and "colour" in extra.text

    with portal_client(seeded) as (officer, clock):
        _sign_in(officer, clock, "officer")
        refused = officer.post("/batch", files={"file": ("v.csv", vins, "text/csv")})
        assert refused.status_code == 403


def test_batch_page_rows_count_against_the_rate_limit(
    seeded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 a minute: at most 10 at once. A file of 30 rows is refused whole, saying why; a file
    of 3 goes through."""
    monkeypatch.setenv("OLV_PORTAL_TOKEN_RATE_PER_MINUTE", "60")
    many = "vin\n" + "1HGCM82633A004352\n" * 30
    with portal_client(seeded) as (client, clock):
        _sign_in(client, clock, "dmv")
        refused = client.post("/batch", files={"file": ("many.csv", many, "text/csv")})
        assert refused.status_code == 429, refused.text
        assert "30 items" in refused.text
        few = client.post(
            "/batch",
            files={
                "file": (
                    "few.csv",
                    "vin\n1HGCM82633A004352\n" * 1 + "5YJSA1E26HF000337\n" * 2,
                    "text/csv",
                )
            },
        )
        assert few.status_code == 200, few.text
        assert len(list(csv.DictReader(io.StringIO(few.text)))) == 3


def test_a_long_batch_page_goes_at_the_rate_limits_pace(
    seeded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """6,000 a minute: 1,000 at once, then 100 a second. The first thousand rows of a file of
    1,500 use up the burst; the other 500 wait about 5 s for room instead of going around
    the limit. (Rows dated in the future: each counts, none needs an insurer.)"""
    monkeypatch.setenv("OLV_PORTAL_TOKEN_RATE_PER_MINUTE", "6000")
    # Buckets live in the database every portal process shares, so the module's earlier
    # batches would still weigh on this account: start it with a full bucket.
    engine = create_engine(seeded)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM portal_rate"))
    engine.dispose()
    rows = "vin,date\n" + "1HGCM82633A004352,2999-01-01\n" * 1500
    with portal_client(seeded) as (client, clock):
        _sign_in(client, clock, "dmv")
        started = time.monotonic()
        response = client.post("/batch", files={"file": ("long.csv", rows, "text/csv")})
        took = time.monotonic() - started
    assert response.status_code == 200, response.text
    answered = list(csv.DictReader(io.StringIO(response.text)))
    assert len(answered) == 1500 and all("future" in r["error"] for r in answered)
    assert took >= 3.5, f"1,500 rows in {took:.1f} s: the last 500 did not wait for the limit"
