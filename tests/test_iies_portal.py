"""The portal's enforcement routes on SQLite and PostgreSQL: the inquiry API and page, the public
status page, paper proof posted from the page, and the reports (page, JSON, CSV, SVG)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from enforcement import proof
from enforcement.case_settings import CaseSettings
from enforcement.models import Activity, Letter
from enforcement.run import exclusive, run
from olv import db
from tests.helpers import row_lock
from tests.helpers.iies_cases import add_registrant, add_txn
from tests.helpers.portal import add_user
from tests.helpers.portal_web import portal_client

D0 = date(2026, 10, 1)
VIN = "1HGCM82633A004352"
SETTINGS = CaseSettings()
IN_TIME = 6.5  # the portal's 5-s budget, with room for a loaded machine


def day(n: int) -> date:
    return D0 + timedelta(days=n)


@pytest.fixture
def world(db_url: str) -> Iterator[tuple[Engine, dict[str, str], int]]:
    """One registration: insurer 22222's new business, 11111's cancellation, a letter; tokens."""
    engine = db.make_engine(db_url)
    reg = add_registrant(engine, "ABC123", VIN, last="SMITH")
    add_txn(engine, reg, "NBS", "22222", day(-300))
    add_txn(engine, reg, "XLC", "22222", day(-100))
    add_txn(engine, reg, "NBS", "11111", day(-100))
    add_txn(engine, reg, "XLC", "11111", day(0))
    run(engine, day(0), SETTINGS)
    run(engine, day(10), SETTINGS)
    tokens = {
        "dmv": add_user(engine, "clerk", "dmv"),
        "ins1": add_user(engine, "liaison1", "insurer", "11111"),
        "ins3": add_user(engine, "liaison3", "insurer", "33333"),
        "officer": add_user(engine, "cop", "officer"),
        "admin": add_user(engine, "root", "admin"),
    }
    yield engine, tokens, reg
    engine.dispose()


@pytest.fixture
def client(db_url: str) -> Iterator[TestClient]:
    with portal_client(db_url) as (client, _):
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def doc_id_of(engine: Engine) -> str:
    with db.transaction(engine) as session:
        return session.scalars(select(Letter.doc_id)).one()


def test_inquiry_api_for_dmv_by_vin_and_by_document_id(world, client: TestClient) -> None:
    engine, tokens, _ = world
    answer = client.get("/api/v1/iies/cases", params={"vin": VIN}, headers=bearer(tokens["dmv"]))
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["vin"] == VIN and record["plate"] == "ABC123" and record["case_state"] == "FIQ"
    assert [a["code"] for a in record["activities"]] == ["NBS", "XLC", "NBS", "XLC", "LTF"]
    by_doc = client.get(
        "/api/v1/iies/cases", params={"doc_id": doc_id_of(engine)}, headers=bearer(tokens["dmv"])
    )
    assert by_doc.status_code == 200 and by_doc.json() == record
    assert "SMITH" not in answer.text and "ELM" not in answer.text


def test_inquiry_api_gives_insurers_their_own_filings_only(world, client: TestClient) -> None:
    _, tokens, _ = world
    mine = client.get("/api/v1/iies/cases", params={"vin": VIN}, headers=bearer(tokens["ins1"]))
    assert mine.status_code == 200
    assert [a["code"] for a in mine.json()["activities"]] == ["NBS", "XLC", "LTF"]
    other = client.get("/api/v1/iies/cases", params={"vin": VIN}, headers=bearer(tokens["ins3"]))
    assert other.status_code == 404


def test_a_refused_transaction_opens_no_record_to_its_insurer(world, client: TestClient) -> None:
    """A transaction that matched the registration but was refused by an edit (E, not posted;
    here a reinstatement with no cancellation before it) files nothing: its insurer still
    gets 404, not the other insurers' record and letters."""
    engine, tokens, reg = world
    add_txn(engine, reg, "REC", "33333", day(5), disposition="E")
    other = client.get("/api/v1/iies/cases", params={"vin": VIN}, headers=bearer(tokens["ins3"]))
    assert other.status_code == 404, other.text


@pytest.mark.parametrize(
    ("params", "who", "status"),
    [
        ({"vin": VIN}, "officer", 403),
        ({"vin": VIN}, None, 401),
        ({"doc_id": "12345"}, "dmv", 422),
        ({"doc_id": "1234567897", "vin": VIN}, "dmv", 422),
        ({}, "dmv", 422),
        ({"vin": "2T1BURHE0JC014706"}, "dmv", 404),
        ({"doc_id": "1234567897"}, "dmv", 404),
    ],
)
def test_inquiry_api_refusals(world, client: TestClient, params, who, status) -> None:
    _, tokens, _ = world
    headers = bearer(tokens[who]) if who else {"Accept": "application/json"}
    assert client.get("/api/v1/iies/cases", params=params, headers=headers).status_code == status


def test_inquiry_page_shows_the_record(world, client: TestClient) -> None:
    engine, tokens, _ = world
    page = client.get(
        "/iies/inquiry",
        params={"doc_id": doc_id_of(engine)},
        headers={"Authorization": f"Bearer {tokens['dmv']}"},
    )
    assert page.status_code == 200 and 'id="case-state">FIQ<' in page.text
    assert "LTF" in page.text and "SMITH" not in page.text


def test_public_status_page_needs_no_sign_in_and_tells_only_state_and_next_step(
    world, client: TestClient
) -> None:
    engine, _, _ = world
    doc_id = doc_id_of(engine)
    page = client.get("/iies/status", params={"doc_id": doc_id, "plate": "abc 123"})
    assert page.status_code == 200, page.text
    assert 'id="case-state">FIQ<' in page.text and "insurance card" in page.text
    for private in (VIN, "SMITH", "ELM", "11111"):
        assert private not in page.text
    as_json = client.get("/iies/status.json", params={"doc_id": doc_id, "plate": "ABC123"})
    assert as_json.json()["status"]["case_state"] == "FIQ"
    assert set(as_json.json()["status"]) == {"case_state", "description", "next_step"}
    wrong_plate = client.get("/iies/status", params={"doc_id": doc_id, "plate": "XYZ999"})
    assert wrong_plate.status_code == 404 and "FIQ" not in wrong_plate.text
    assert client.get("/iies/status").status_code == 200  # the empty form


def test_public_status_page_is_rate_limited(
    db_url: str, world, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, _, _ = world
    monkeypatch.setenv("OLV_IIES_STATUS_RATE_PER_MINUTE", "6")
    doc_id = doc_id_of(engine)
    with portal_client(db_url) as (client, _):
        codes = [
            client.get("/iies/status", params={"doc_id": "1234567897", "plate": "A1"}).status_code
            for _ in range(5)
        ]
        assert codes[0] == 404 and 429 in codes
        # Once limited, even the right pair waits: guessing costs the same as asking.
        limited = client.get("/iies/status", params={"doc_id": doc_id, "plate": "ABC123"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_proof_page_posts_paper_proof(world, client: TestClient) -> None:
    _, tokens, _ = world
    headers = {"Authorization": f"Bearer {tokens['dmv']}"}
    form = {"plate": "ABC123", "state": "NY", "naic": "44444", "policy": "K-1"}
    done = client.post("/iies/proof", data=form, headers=headers)
    assert done.status_code == 200, done.text
    assert 'id="outcome">mvf<' in done.text and "MVF tracking number M" in done.text
    bad = client.post("/iies/proof", data={**form, "naic": "4"}, headers=headers)
    assert bad.status_code == 422 and "--naic" in bad.text
    insurer = client.post(
        "/iies/proof", data=form, headers={"Authorization": f"Bearer {tokens['ins1']}"}
    )
    assert insurer.status_code == 403


def test_proof_page_during_a_run_keeps_the_form_and_changes_nothing(
    world, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, tokens, _ = world
    monkeypatch.setattr(proof, "PROOF_WAIT_SECONDS", 0.5)
    headers = {"Authorization": f"Bearer {tokens['dmv']}"}
    form = {"plate": "ABC123", "state": "NY", "naic": "44444", "policy": "K-1"}
    with db.transaction(engine) as session:
        letters = len(session.scalars(select(Letter)).all())
    with exclusive(engine, wait_seconds=0):  # the day's run, on another host
        busy = client.post("/iies/proof", data=form, headers=headers)
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "60"
    assert "another &#39;olv iies run&#39; is working" in busy.text, busy.text
    assert "nothing changed" in busy.text and 'value="K-1"' in busy.text
    with db.transaction(engine) as session:
        assert len(session.scalars(select(Letter)).all()) == letters
    done = client.post("/iies/proof", data=form, headers=headers)
    assert done.status_code == 200 and 'id="outcome">mvf<' in done.text


def test_proof_page_on_a_locked_database_answers_503_in_time_and_changes_nothing(
    world, client: TestClient, db_url: str
) -> None:
    """A lock held elsewhere on the registration (PostgreSQL) or on the file (SQLite) made the
    page wait for it, 19-31 s, and post the proof after the clerk's browser had given up."""
    engine, tokens, _ = world
    headers = {"Authorization": f"Bearer {tokens['dmv']}"}
    form = {"plate": "ABC123", "state": "NY", "naic": "44444", "policy": "K-1"}
    before = _activity_count(engine)
    with row_lock.held(
        db_url, "SELECT id FROM registrations WHERE plate = :p FOR UPDATE", {"p": "ABC123"}
    ):
        started = time.monotonic()
        busy = client.post("/iies/proof", data=form, headers=headers)
        took = time.monotonic() - started
    assert busy.status_code == 503, busy.text
    assert took < IN_TIME, took
    if not db.is_sqlite(db_url):
        # SQLite's lock is the whole file's: the sign-in's own rate-limit write answers 503
        # first, before the page; on PostgreSQL the page itself keeps the form.
        assert busy.headers["Retry-After"] == "60"
        assert "nothing changed" in busy.text and 'value="K-1"' in busy.text
    assert _activity_count(engine) == before
    done = client.post("/iies/proof", data=form, headers=headers)
    assert done.status_code == 200 and 'id="outcome">mvf<' in done.text
    assert _activity_count(engine) > before


def _activity_count(engine: Engine) -> int:
    with db.transaction(engine) as session:
        return len(session.scalars(select(Activity)).all())


def test_insurer_report_page_json_and_csv(world, client: TestClient) -> None:
    _, tokens, _ = world
    since, until = (date.today() - timedelta(days=3)).isoformat(), date.today().isoformat()
    window = {"since": since, "until": until}
    own = client.get("/iies/reports.json", params=window, headers=bearer(tokens["ins1"]))
    assert own.status_code == 200, own.text
    report = own.json()["report"]
    assert report["naic"] == "11111" and report["transactions"] == 2
    assert report["dispositions"] == {"H": 2, "R": 0, "E": 0, "U": 0}
    nbs = report["timeliness"]["nbs_within_7_days"]
    assert nbs == {"on_time": 0, "total": 1, "percent": 0.0}  # filed long after its date
    assert (
        client.get(
            "/iies/reports.json", params={**window, "naic": "22222"}, headers=bearer(tokens["ins1"])
        ).status_code
        == 403
    )
    html = client.get(
        "/iies/reports",
        params={**window, "naic": "22222"},
        headers={"Authorization": f"Bearer {tokens['dmv']}"},
    )
    assert html.status_code == 200 and html.text.count("<svg") == 2
    csv_text = client.get(
        "/iies/reports.csv", params={**window, "naic": "11111"}, headers=bearer(tokens["admin"])
    )
    assert csv_text.status_code == 200 and csv_text.text.startswith("day,naic,received,H,R,E,U")
    assert f"{until},11111,2,2,0,0,0" in csv_text.text


def test_statewide_page_counts_open_cases_and_uninsured_months(world, client: TestClient) -> None:
    _, tokens, _ = world
    params = {"since": day(0).isoformat(), "until": day(20).isoformat()}
    answer = client.get("/iies/statewide.json", params=params, headers=bearer(tokens["dmv"]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["open_cases"] == {"NY": 1}
    assert {"month": "2026-10", "registrations": 1} in body["uninsured_per_month"]
    assert (
        client.get(
            "/iies/statewide.json", params=params, headers=bearer(tokens["ins1"])
        ).status_code
        == 403
    )
    html = client.get(
        "/iies/statewide", params=params, headers={"Authorization": f"Bearer {tokens['dmv']}"}
    )
    assert html.status_code == 200 and html.text.count("<svg") == 2
