"""Every error the portal's API answers has one shape:
``{"ok": false, "status": <HTTP status>, "error": "…", "errors": [{"field", "message"}…]}``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from olv import db
from olv.config import Settings
from portal.app import create_app
from portal.insurer_client import InsurerConfig, MemoryTransport, Reply
from portal.settings import PortalSettings
from tests.helpers.portal import add_user, answer


async def unconfirmed(_: InsurerConfig, __: bytes) -> Reply:
    return Reply(200, answer("00200809", "Unconfirmed", ("VIN1",)))


def make_client(url: str, **portal: object) -> TestClient:
    app = create_app(
        Settings(database_url=url), PortalSettings(**portal), transport=MemoryTransport(unconfirmed)
    )
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def api(db_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    engine = db.make_engine(db_url)
    tokens = {
        role: add_user(engine, role + "1", role, "10001" if role == "insurer" else None)
        for role in ("officer", "dmv", "insurer")
    }
    engine.dispose()
    with make_client(db_url) as client:
        yield client, tokens


def assert_shape(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"ok", "status", "error", "errors"}
    assert body["ok"] is False and body["status"] == status
    assert isinstance(body["error"], str) and body["error"]
    for entry in body["errors"]:
        assert set(entry) == {"field", "message"}
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    assert "Traceback" not in response.text
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_401_without_or_with_a_bad_token(api) -> None:
    client, _ = api
    assert_shape(client.post("/api/v1/verify", json={"vin": "X1"}), 401)
    basic = client.post(
        "/api/v1/verify", json={"vin": "X1"}, headers={"Authorization": "Basic eDp5"}
    )
    assert_shape(basic, 401)
    wrong = client.post("/api/v1/verify", json={"vin": "X1"}, headers=bearer("olv_nope"))
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert_shape(wrong, 401)


def test_403_for_a_role_that_may_not(api) -> None:
    client, tokens = api
    assert_shape(
        client.post("/api/v1/verify", json={"vin": "X1"}, headers=bearer(tokens["insurer"])), 403
    )
    batch = {"items": [{"vin": "X1"}]}
    assert_shape(
        client.post("/api/v1/verify/batch", json=batch, headers=bearer(tokens["officer"])), 403
    )


def test_unknown_paths_plates_and_queries_answer_404_in_the_error_shape(api) -> None:
    client, tokens = api
    assert_shape(client.get("/api/v1/nothing-here"), 404)
    assert_shape(
        client.post("/api/v1/verify", json={"plate": "ZZZ999"}, headers=bearer(tokens["officer"])),
        404,
    )
    assert_shape(client.get("/api/v1/queries/" + "0" * 32, headers=bearer(tokens["officer"])), 404)


def test_a_wrong_method_answers_405_in_the_error_shape(api) -> None:
    client, tokens = api
    assert_shape(client.get("/api/v1/verify", headers=bearer(tokens["officer"])), 405)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "vin"),
        ({"vin": "  "}, "vin"),
        ({"vin": "X1", "plate": "P1"}, "plate"),
        ({"vin": "X1", "date": "2024-02-30"}, "date"),
        ({"vin": "X1", "date": "2999-01-01"}, "date"),
        ({"vin": "X1", "date": "2000-01-01"}, "date"),
        ({"vin": "X1", "date": "yesterday"}, "date"),
        ({"vin": "X1", "naic": "12"}, "naic"),
        ({"vin": "X1", "policy_number": "P-1"}, "naic"),
        ({"vin": "X1", "reason": "FUN"}, "reason"),
        ({"vin": "X1", "colour": "red"}, "colour"),
        ({"vin": 17}, "vin"),
        ({"vin": "X" * 26}, "vin"),
        ({"plate": "P1", "plate_state": "Idaho"}, "plate_state"),
        ([1, 2], "body"),
    ],
)
def test_422_names_the_field(api, body: object, field: str) -> None:
    client, tokens = api
    assert_shape(
        client.post("/api/v1/verify", json=body, headers=bearer(tokens["officer"])), 422, field
    )


def test_422_for_a_body_that_is_not_json(api) -> None:
    client, tokens = api
    response = client.post(
        "/api/v1/verify",
        content=b"{not json",
        headers={**bearer(tokens["officer"]), "Content-Type": "application/json"},
    )
    assert_shape(response, 422, "body")


def test_422_in_a_batch_names_the_item(api) -> None:
    client, tokens = api
    headers = bearer(tokens["dmv"])
    bad_item = {"items": [{"vin": "X1"}, {"vin": "X2", "date": "2999-01-01"}]}
    assert_shape(
        client.post("/api/v1/verify/batch", json=bad_item, headers=headers), 422, "items.1.date"
    )
    too_many = {"items": [{"vin": "X1"}] * 1001}
    assert_shape(client.post("/api/v1/verify/batch", json=too_many, headers=headers), 422, "items")
    assert_shape(
        client.post("/api/v1/verify/batch", json={"items": []}, headers=headers), 422, "items"
    )


def test_422_for_a_malformed_query_id(api) -> None:
    client, tokens = api
    assert_shape(
        client.get("/api/v1/queries/not-an-id", headers=bearer(tokens["officer"])), 422, "query_id"
    )


def test_413_for_a_huge_body(api) -> None:
    client, tokens = api
    huge = b'{"vin": "' + b"X" * (2 * 1024 * 1024) + b'"}'
    response = client.post(
        "/api/v1/verify",
        content=huge,
        headers={**bearer(tokens["officer"]), "Content-Type": "application/json"},
    )
    assert_shape(response, 413)


def test_429_when_a_token_is_over_its_rate(db_url: str) -> None:
    engine = db.make_engine(db_url)
    token = add_user(engine, "busy1", "officer")
    engine.dispose()
    with make_client(db_url, token_rate_per_minute=1) as client:
        first = client.post("/api/v1/verify", json={"plate": "ZZZ1"}, headers=bearer(token))
        assert first.status_code == 404
        second = client.post("/api/v1/verify", json={"plate": "ZZZ1"}, headers=bearer(token))
        assert_shape(second, 429)
        assert int(second.headers["retry-after"]) >= 1


def test_500_keeps_the_shape_and_tells_nothing(tmp_path: Path) -> None:
    # A database without the portal's tables: every token check fails inside the app.
    with make_client(f"sqlite:///{tmp_path / 'empty.db'}") as client:
        response = client.post(
            "/api/v1/verify", json={"vin": "X1"}, headers=bearer("olv_" + "a" * 12 + "_" + "b" * 43)
        )
        body = assert_shape(response, 500)
        assert body["error"] == "internal error" and "sqlite" not in response.text.lower()


def test_503_when_the_database_cannot_be_reached_and_a_log_line_for_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lost or unreachable database is an outage (503, try again), not a fault of the portal
    (500); and every 5xx the portal answers leaves a line naming the path and the cause."""
    caplog.set_level(logging.WARNING, logger="portal.errors")
    with make_client(f"sqlite:///{tmp_path / 'gone' / 'olv.db'}") as client:
        response = client.post(
            "/api/v1/verify", json={"vin": "X1"}, headers=bearer("olv_" + "a" * 12 + "_" + "b" * 43)
        )
        body = assert_shape(response, 503)
    assert body["error"] == "the state database is unavailable; try again"
    lines = [
        r for r in caplog.records if r.getMessage().startswith("answered 503 on /api/v1/verify")
    ]
    assert len(lines) == 1 and lines[0].error == "OperationalError"  # type: ignore[attr-defined]


def test_422_for_a_body_that_is_not_utf8(api) -> None:
    client, tokens = api
    response = client.post(
        "/api/v1/verify",
        content=b"\xff\xfe\x16",
        headers={**bearer(tokens["officer"]), "Content-Type": "application/json"},
    )
    assert_shape(response, 422, "body")
