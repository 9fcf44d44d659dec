"""``POST /api/v1/verify``'s fast path (portal.verify_path) answers as the FastAPI route does,
and hands every request it is not sure about to the route."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from olv import db
from portal import verify_path
from tests.helpers.portal import add_user
from tests.test_portal_error_shape import assert_shape, bearer, make_client

VOLATILE = {"query_id", "elapsed_ms"}


@pytest.fixture
def api(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, dict, list]]:
    engine = db.make_engine(db_url)
    tokens = {role: add_user(engine, role + "1", role) for role in ("officer", "admin")}
    engine.dispose()
    taken: list[str] = []
    answer = verify_path.VerifyFastPath._answer

    async def counted(self: Any, scope: Any, *args: Any) -> None:
        taken.append(scope["path"])
        await answer(self, scope, *args)

    monkeypatch.setattr(verify_path.VerifyFastPath, "_answer", counted)
    with make_client(db_url, token_rate_per_minute=600) as client:
        yield client, tokens, taken


def _post(client: TestClient, token: str, body: bytes, content_type: str) -> Any:
    headers = {**bearer(token), "Content-Type": content_type}
    return client.post("/api/v1/verify", content=body, headers=headers)


def test_the_fast_path_answers_as_the_route(api) -> None:
    client, tokens, taken = api
    body = b'{"vin": "1HGCM82633A004352", "reason": "ACC"}'
    fast = _post(client, tokens["officer"], body, "application/json")
    assert taken == ["/api/v1/verify"]
    # A parameter on the content type: FastAPI's route answers it.
    routed = _post(client, tokens["officer"], body, "application/json; charset=utf-8")
    assert taken == ["/api/v1/verify"]
    assert fast.status_code == routed.status_code == 200
    assert sorted(fast.headers) == sorted(routed.headers)
    for name in ("content-type", "cache-control"):
        assert fast.headers[name] == routed.headers[name]
    one, other = fast.json(), routed.json()
    assert list(one) == list(other)
    assert {k: v for k, v in one.items() if k not in VOLATILE} == {
        k: v for k, v in other.items() if k not in VOLATILE
    }
    assert one["query_id"] != other["query_id"]  # both asked and logged, once each
    for answered in (one, other):  # the query log is written in the background
        deadline = time.monotonic() + 10
        while True:
            row = client.get(
                f"/api/v1/queries/{answered['query_id']}", headers=bearer(tokens["admin"])
            )
            if row.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert row.status_code == 200, row.text
        assert row.json()["channel"] == "api" and row.json()["vin"] == answered["vin"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"vin": ""}', "vin"),
        (b'{"vin": "X1", "colour": "red"}', "colour"),
        (b'{"vin": "X1"', "body"),
        (b"[1]", None),
    ],
)
def test_what_it_cannot_answer_gets_the_routes_422(api, body: bytes, field: str | None) -> None:
    client, tokens, taken = api
    assert_shape(_post(client, tokens["officer"], body, "application/json"), 422, field)
    assert taken == []


def test_refusals_on_the_fast_path_keep_their_shape(api) -> None:
    client, tokens, taken = api
    wrong = _post(client, "olv_nope", b'{"vin": "X1"}', "application/json")
    assert_shape(wrong, 401)
    assert wrong.headers["www-authenticate"] == "Bearer"
    unknown_plate = _post(client, tokens["officer"], b'{"plate": "NOPE1"}', "application/json")
    assert_shape(unknown_plate, 404)
    assert len(taken) == 2


def test_the_fast_path_answers_with_the_request_id_and_headers_of_every_answer(api) -> None:
    client, tokens, taken = api
    body = b'{"vin": "1HGCM82633A004352"}'
    headers = {**bearer(tokens["officer"]), "Content-Type": "application/json"}
    kept = client.post("/api/v1/verify", content=body, headers={**headers, "X-Request-ID": "t-1"})
    bent = client.post("/api/v1/verify", content=body, headers={**headers, "X-Request-ID": "a b"})
    assert taken == ["/api/v1/verify"] * 2
    assert kept.headers["x-request-id"] == "t-1"
    assert bent.headers["x-request-id"] != "a b" and len(bent.headers["x-request-id"]) == 32
    for answer in (kept, bent):
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"


def test_what_the_guard_refuses_is_not_taken(api) -> None:
    client, tokens, taken = api
    headers = {**bearer(tokens["officer"]), "Content-Type": "application/json"}
    nul = client.post("/api/v1/verify?x=%00", content=b'{"vin": "X1"}', headers=headers)
    assert_shape(nul, 422, "url")
    large = b'{"vin": "X1", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert_shape(client.post("/api/v1/verify", content=large, headers=headers), 413)
    assert taken == []


DEEP = b'{"vin": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_a_bad_token_is_refused_before_the_body_is_read_however_deep(api, caplog) -> None:
    """JSON nested past what the parser can read gets the route's 422 from a valid token,
    and a 401 from any other, never a 500: the token is checked before the body is parsed."""
    client, tokens, taken = api
    caplog.set_level(logging.WARNING)
    for content_type in ("application/json", "application/json; charset=utf-8"):
        wrong = _post(client, "olv_nope", DEEP, content_type)
        assert_shape(wrong, 401)
        assert wrong.headers["www-authenticate"] == "Bearer"
        bad_json = _post(client, "olv_nope", b'{"vin": "X1"', content_type)
        assert_shape(bad_json, 401)
    none = client.post("/api/v1/verify", content=DEEP, headers={"Content-Type": "application/json"})
    assert_shape(none, 401)
    fast = _post(client, tokens["officer"], DEEP, "application/json")
    routed = _post(client, tokens["officer"], DEEP, "application/json; charset=utf-8")
    assert fast.status_code == routed.status_code and fast.status_code < 500
    assert assert_shape(fast, routed.status_code) == routed.json()
    assert taken == ["/api/v1/verify"] * 2  # the fast path answered its 401s itself
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
