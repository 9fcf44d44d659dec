"""The portal's pages: who may see what (SPEC §5 roles), the admin pages, the book of business
(upload through the loader, own NAIC only for liaisons), compliance charts, query history."""

from __future__ import annotations

import csv
import io
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

import portal.sessions  # noqa: F401  (its tables are truncated between PostgreSQL tests)
from olv import db
from portal.models import Insurer, InsurerCall, QueryLog
from portal.permissions import Role
from portal.web.render import NAV
from tests.helpers.portal_web import (
    Clock,
    add_user,
    portal_client,
    sign_in,
    sqlite_copy,
)

FIXTURES = Path(__file__).parent / "fixtures" / "bob"

# The menu's pages, and which each role reaches: derived from portal/permissions.py (whose
# table tests/test_portal_permissions.py holds against SPEC §5).
PAGES = tuple(item.href for item in NAV)
ALLOWED = {role.value: {item.href for item in NAV if item.action.allows(role)} for role in Role}


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return sqlite_copy(sqlite_template, tmp_path, monkeypatch)


def _insert(url: str, model: type, rows: list[dict[str, object]]) -> None:
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(model), rows)
    finally:
        engine.dispose()


def _signed_in(client: TestClient, clock: Clock, url: str, role: str, naic: str | None = None):
    add_user(url, f"{role}-user", role, naic)
    sign_in(client, clock, f"{role}-user")


def test_every_page_enforces_the_roles(db_url: str) -> None:
    for role, allowed in ALLOWED.items():
        with portal_client(db_url) as (client, clock):
            _signed_in(client, clock, db_url, role, "12345" if role == "insurer" else None)
            for path in PAGES:
                response = client.get(path)
                expected = 200 if path in allowed else 403
                assert response.status_code == expected, (role, path, response.text[:200])
                if expected == 403:
                    assert "Not allowed" in response.text  # a page, not a JSON error
            # a signed-in browser may call the JSON API too, under the same role rules
            api = client.post(
                "/api/v1/verify", json={"vin": "1HGCM82633A004352"}, headers={"Accept": "*/*"}
            )
            if role == "insurer":
                assert api.status_code == 403, api.text  # insurers never verify vehicles
            else:
                # no insurer registered: a broadcast to nobody, answered "not found"
                assert api.status_code == 200, api.text
                assert (api.json()["verdict"], api.json()["source"]) == ("unconfirmed", "broadcast")


def test_json_twins_say_what_the_pages_say(sqlite_url: str) -> None:
    with portal_client(sqlite_url) as (client, clock):
        _signed_in(client, clock, sqlite_url, "admin")
        users = client.get("/admin/users.json").json()["users"]
        assert [u["username"] for u in users] == ["admin-user"]
        page = client.get("/admin/users").text
        assert all(u["username"] in page for u in users)
        assert client.get("/admin/insurers.json").json() == {"insurers": []}


def test_admin_registers_and_edits_an_insurer(db_url: str) -> None:
    with portal_client(db_url) as (client, clock):
        _signed_in(client, clock, db_url, "admin")
        form = {
            "naic": "12345",
            "name": "Acme Mutual",
            "url": "https://soap.acme.example/iicmva",
            "version": "00200510",
            "timeout_seconds": "3.5",
            "accepts_unknown": "1",
            "enabled": "1",
        }
        assert client.post("/admin/insurers", data=form).status_code == 303
        (row,) = client.get("/admin/insurers.json").json()["insurers"]
        assert row["version"] == "00200510" and row["accepts_unknown"] and row["enabled"]
        assert row["timeout_seconds"] == 3.5
        edit = client.get("/admin/insurers/12345")
        assert "Acme Mutual" in edit.text and "readonly" in edit.text
        changed = {**form, "name": "Acme Mutual Group", "timeout_seconds": ""}
        del changed["enabled"]
        assert client.post("/admin/insurers", data=changed).status_code == 303
        (row,) = client.get("/admin/insurers.json").json()["insurers"]
        assert row["name"] == "Acme Mutual Group" and not row["enabled"]
        assert row["timeout_seconds"] is None
        bad = client.post("/admin/insurers", data={**form, "url": "ftp://x"})
        assert bad.status_code == 422 and "not an http(s) URL" in bad.text
        assert client.get("/admin/insurers/99999").status_code == 404


def test_admin_creates_a_token_shown_once_and_revokes_it(sqlite_url: str) -> None:
    add_user(sqlite_url, "dmv-system", "dmv")
    with portal_client(sqlite_url) as (client, clock):
        _signed_in(client, clock, sqlite_url, "admin")
        created = client.post("/admin/tokens", data={"username": "dmv-system", "days": "30"})
        assert created.status_code == 200
        token = created.text.split('<code class="secret">', 1)[1].split("<", 1)[0]
        assert token.startswith("olv_")
        listing = client.get("/admin/tokens")
        assert token not in listing.text  # shown once only
        (row,) = client.get("/admin/tokens.json").json()["tokens"]
        assert row["username"] == "dmv-system" and row["state"] == "active"
        # a bearer token takes precedence over the browser's session cookie
        auth = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        assert client.get("/api/v1/queries/0", headers=auth).status_code in (404, 422)  # accepted
        assert client.post(f"/admin/tokens/{row['id']}/revoke").status_code == 303
        assert client.get("/admin/tokens.json").json()["tokens"][0]["state"] == "revoked"
        assert client.get("/api/v1/queries/0", headers=auth).status_code == 401


def test_book_of_business_upload_and_liaison_sees_only_its_naic(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLV_PORTAL_UPLOAD_DIR", str(tmp_path / "uploads"))
    acme = FIXTURES / "Acme 20261101.txt"  # NAIC 12345
    mixed = FIXTURES / "Mixed 20261101.txt"  # NAIC 54321, with bad records
    with portal_client(db_url) as (liaison, clock):
        _signed_in(liaison, clock, db_url, "insurer", "12345")
        up = liaison.post("/bob/upload", files={"file": (acme.name, acme.read_bytes())})
        assert up.status_code == 200 and "accepted" in up.text, up.text
        foreign = liaison.post("/bob/upload", files={"file": (mixed.name, mixed.read_bytes())})
        assert "54321" in foreign.text and "nothing was loaded" in foreign.text
        # the rejected file is not kept on disk; the accepted one is
        kept = sorted(p.name for p in (tmp_path / "uploads").rglob("*") if p.is_file())
        assert mixed.name not in kept and acme.name in kept, kept
        mine = liaison.get("/bob.json").json()
        assert [f["name"] for f in mine["files"]] == [acme.name]
        assert [m["naic"] for m in mine["masters"]] == ["12345"]
        acme_id = mine["files"][0]["id"]
        report = liaison.get(f"/bob/files/{acme_id}/report.txt")
        assert report.status_code == 200 and "status: accepted" in report.text

    with portal_client(db_url) as (admin, clock):
        _signed_in(admin, clock, db_url, "admin")
        up = admin.post("/bob/upload", files={"file": (mixed.name, mixed.read_bytes())})
        assert up.status_code == 200
        files = admin.get("/bob.json").json()["files"]
        assert {f["name"] for f in files} == {acme.name, mixed.name}
        mixed_row = next(f for f in files if f["name"] == mixed.name)
        report = admin.get(f"/bob/files/{mixed_row['id']}/report.txt")
        assert "line 3: effective date" in report.text
        assert report.headers["content-disposition"].startswith("attachment")
        # the page's report says what the loader's report file says (less the count of bad
        # records, which the database does not keep)
        (written,) = (tmp_path / "uploads").rglob(mixed.name + ".errors.txt")
        lines = written.read_text().splitlines()
        assert any(line.startswith("records with errors") for line in lines)
        expected = [line for line in lines if not line.startswith("records with errors")]
        assert report.text.splitlines() == expected
        filtered = admin.get("/bob.json?naic=12345").json()
        assert [f["name"] for f in filtered["files"]] == [acme.name]

    # the liaison cannot read the other NAIC's report, even by guessing its id
    with portal_client(db_url) as (other, clock):
        add_user(db_url, "liaison2", "insurer", "12345")
        sign_in(other, clock, "liaison2")
        assert other.get(f"/bob/files/{mixed_row['id']}/report.txt").status_code == 404
    assert (tmp_path / "uploads").is_dir()
    shutil.rmtree(tmp_path / "uploads")


@pytest.mark.parametrize(
    ("claimed", "kept"),
    [
        ("..", "upload.txt"),
        ("../../etc/Acme 20261101.txt", "Acme 20261101.txt"),
        ("C:\\Users\\me\\Acme 20261101.txt", "Acme 20261101.txt"),
        (".hidden.txt", "hidden.txt"),
        ("A" * 400 + ".txt", "A" * 200),
    ],
)
def test_an_uploaded_file_keeps_a_safe_name(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claimed: str, kept: str
) -> None:
    uploads = tmp_path / "uploads"
    monkeypatch.setenv("OLV_PORTAL_UPLOAD_DIR", str(uploads))
    acme = FIXTURES / "Acme 20261101.txt"
    with portal_client(sqlite_url) as (admin, clock):
        _signed_in(admin, clock, sqlite_url, "admin")
        up = admin.post("/bob/upload", files={"file": (claimed, acme.read_bytes())})
        assert up.status_code == 200, up.text
    (folder,) = uploads.iterdir()
    assert kept in [p.name for p in folder.iterdir()]
    assert all(p.resolve().is_relative_to(uploads.resolve()) for p in uploads.rglob("*"))


def test_row_numbers_beyond_the_database_are_invalid_not_a_crash(sqlite_url: str) -> None:
    with portal_client(sqlite_url) as (admin, clock):
        _signed_in(admin, clock, sqlite_url, "admin")
        huge = "9" * 30
        assert admin.get(f"/bob/files/{huge}/report.txt").status_code == 422
        assert admin.post(f"/admin/users/{huge}/unlock").status_code == 422
        assert admin.get("/bob/files/0/report.txt").status_code == 422


def _calls(naic: str, day: datetime, latencies: list[float], outcome: str = "ok") -> list[dict]:
    return [
        {"at": day + timedelta(minutes=i), "naic": naic, "outcome": outcome, "latency_ms": ms}
        for i, ms in enumerate(latencies)
    ]


def test_compliance_charts_and_rule_breakers(db_url: str) -> None:
    now = datetime.now(UTC)
    stamp = {"created_at": now, "updated_at": now, "accepts_unknown": False, "enabled": True}
    _insert(
        db_url,
        Insurer,
        [
            {"naic": "12345", "name": "Fast Co", "url": "http://a", "version": "00200809", **stamp},
            {"naic": "54321", "name": "Slow Co", "url": "http://b", "version": "00200510", **stamp},
        ],
    )
    yesterday = datetime.combine(date.today() - timedelta(days=1), datetime.min.time(), UTC)
    yesterday += timedelta(hours=12)
    _insert(
        db_url,
        InsurerCall,
        _calls("12345", yesterday, [100.0] * 98 + [200.0, 1800.0])
        + _calls("54321", yesterday, [900.0, 2000.0, 6000.0])
        + _calls("54321", yesterday, [5000.0], outcome="timeout")
        + _calls("54321", yesterday, [10.0], outcome="cancelled"),
    )
    with portal_client(db_url) as (client, clock):
        clock.now = datetime.now(UTC)
        _signed_in(client, clock, db_url, "admin")
        page = client.get("/compliance")
        assert page.status_code == 200
        assert page.text.count("<svg") == 8 and "https://" not in page.text.replace(
            "http://www.w3.org/2000/svg", ""
        )
        data = client.get("/compliance.json").json()
        assert [s["naic"] for s in data["slow"]] == ["54321"] and data["slow"][0]["over_5s"] == 2
        fast, slow = data["insurers"]
        day = yesterday.date().isoformat()
        fast_day = next(d for d in fast["days"] if d["day"] == day)
        assert fast_day["calls"] == 100 and fast_day["availability"] == 100.0
        assert (fast_day["p50_ms"], fast_day["p95_ms"], fast_day["p99_ms"]) == (100, 100, 200)
        assert fast_day["over_1_75s"] == 1 and fast_day["over_5s"] == 0
        slow_day = next(d for d in slow["days"] if d["day"] == day)
        assert slow_day["calls"] == 4 and slow_day["unavailable"] == 1  # cancelled not counted
        assert slow_day["availability"] == 75.0 and slow_day["over_1_75s"] == 3
        # neither insurer sent a book of business
        assert {m["naic"] for m in data["missing_bob"]} == {"12345", "54321"}
        bad = client.get("/compliance?since=2026-01-01&until=2026-12-31")
        assert bad.status_code == 422

    with portal_client(db_url) as (liaison, clock):
        clock.now = datetime.now(UTC)
        _signed_in(liaison, clock, db_url, "insurer", "12345")
        data = liaison.get("/compliance.json").json()
        assert [i["naic"] for i in data["insurers"]] == ["12345"]
        assert data["slow"] == [] and [m["naic"] for m in data["missing_bob"]] == ["12345"]


def _query_row(number: int, username: str, role: str, vin: str, verdict: str) -> dict:
    return {
        "id": f"{number:032x}",
        "at": datetime(2026, 11, 2, 10, number, tzinfo=UTC),
        "username": username,
        "role": role,
        "channel": "page",
        "vin": vin,
        "http_status": 200,
        "status": "Confirmed" if verdict == "confirmed" else "Unconfirmed",
        "verdict": verdict,
        "reason_codes": "" if verdict == "confirmed" else "VIN1",
        "latency_ms": 12.5,
        "policy_number": "=HYPERLINK(1)" if number == 1 else None,
    }


def test_history_own_queries_admin_search_and_streamed_csv(db_url: str) -> None:
    rows = [
        _query_row(1, "officer-user", "officer", "1HGCM82633A004352", "confirmed"),
        _query_row(2, "officer-user", "officer", "2T1BURHE0JC014706", "unconfirmed"),
        _query_row(3, "someone-else", "court", "1HGCM82633A004352", "unable_to_verify"),
    ]
    _insert(db_url, QueryLog, rows)
    with portal_client(db_url) as (officer, clock):
        _signed_in(officer, clock, db_url, "officer")
        mine = officer.get("/history.json").json()["rows"]
        assert [r["query_id"] for r in mine] == [rows[1]["id"], rows[0]["id"]]
        assert officer.get("/history.json?username=someone-else").json()["rows"] == mine
        exported = list(csv.DictReader(io.StringIO(officer.get("/history.csv").text)))
        assert len(exported) == 2

    with portal_client(db_url) as (admin, clock):
        _signed_in(admin, clock, db_url, "admin")
        assert len(admin.get("/history.json").json()["rows"]) == 3
        by_vin = admin.get("/history.json?vehicle=1hgcm82633a004352").json()["rows"]
        assert {r["username"] for r in by_vin} == {"officer-user", "someone-else"}
        by_user = admin.get("/history.json?username=someone-else&verdict=unable_to_verify")
        assert [r["query_id"] for r in by_user.json()["rows"]] == [rows[2]["id"]]
        response = admin.get("/history.csv?since=2026-11-02&until=2026-11-02")
        assert response.headers["content-type"].startswith("text/csv")
        exported = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["query_id"] for r in exported] == [r["id"] for r in rows]  # oldest first
        assert exported[0]["policy_number"] == "'=HYPERLINK(1)"  # no formulas in spreadsheets
        assert admin.get("/history.json?since=yesterday").status_code == 422
