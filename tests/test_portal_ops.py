"""The portal's operations surface on a real ``olv portal serve`` asking a real ``olv soap
serve``: ``/metrics`` counting answers, verifications and insurer calls by NAIC and outcome,
and the files received by status; refused to anyone outside ``OLV_METRICS_NETWORKS``; one
request id from the caller through the portal's log, its answer and the insurer's log;
``/readyz`` 503 within a second on a hung database."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from olv import db
from tests.helpers import data, loopback
from tests.helpers.data import NAIC, VIN_NOWHERE, VIN_OK
from tests.helpers.portal import add_insurer, add_user, load_bob, portal_server, refusing_insurer
from tests.helpers.private_pg import private_postgres
from tests.helpers.scrape import labelled, log_lines, scrape, value
from tests.helpers.soap import soap_server

pytestmark = pytest.mark.slow

REFUSED_NAIC = "40004"
VIN_REFUSED = "REFUSED0000000001"


@dataclass
class World:
    base: str
    token: str
    portal_log: Path
    insurer_log: Path

    def verify(self, vin: str, headers: dict[str, str | bytes] | None = None) -> httpx.Response:
        return loopback.post(
            f"{self.base}/api/v1/verify",
            json={"vin": vin},
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
            timeout=10,
        )


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("ops")
    insurer_url = f"sqlite:///{folder / 'insurer.db'}"
    db.upgrade(insurer_url)
    data.load_policies(insurer_url, folder)
    engine = db.make_engine(module_db_url)
    load_bob(engine, folder, [(NAIC, "P-OK", VIN_OK), (REFUSED_NAIC, "R-1", VIN_REFUSED)])
    with engine.begin() as conn:  # one rejected IIES file, as the intake would record it
        conn.execute(
            text(
                "INSERT INTO iies_files (naic, channel, name, received_at, status, rows,"
                " matched, resolved, edit_errors, unresolved)"
                " VALUES ('10001', 'cli', 'x.txt', :at, 'rejected', 0, 0, 0, 0, 0)"
            ),
            {"at": datetime.now(UTC)},
        )
    token = add_user(engine, "officer1", "officer")
    with (
        soap_server({"OLV_DATABASE_URL": insurer_url}, folder) as insurer,
        refusing_insurer() as refused,
    ):
        add_insurer(engine, NAIC, insurer.url("/iicmva/00200809"), accepts_unknown=True)
        add_insurer(engine, REFUSED_NAIC, refused)
        engine.dispose()
        with portal_server({"OLV_DATABASE_URL": module_db_url}, folder) as portal:
            yield World(portal.base, token, portal.log, insurer.log)


def test_counts_verifications_and_insurer_calls_by_naic_and_outcome(world: World) -> None:
    before = scrape(world.base)
    for _ in range(3):
        assert world.verify(VIN_OK).json()["verdict"] == "confirmed"
    for _ in range(2):
        assert world.verify(VIN_REFUSED).json()["verdict"] == "unable_to_verify"
    after = scrape(world.base)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    calls = "olv_portal_insurer_calls_total"
    assert moved(calls, naic=NAIC, outcome="ok") == 3
    assert moved(calls, naic=REFUSED_NAIC, outcome="refused") == 2
    assert moved("olv_portal_insurer_call_seconds_count", naic=NAIC) == 3
    verifications = "olv_portal_verifications_total"
    assert moved(verifications, channel="api", response="Confirmed", verdict="confirmed") == 3
    assert moved(verifications, verdict="unable_to_verify") == 2
    endpoint = {"endpoint": "/api/v1/verify", "method": "POST"}
    assert moved("olv_portal_requests_total", status="200", **endpoint) == 5
    assert moved("olv_portal_request_seconds_count", endpoint="/api/v1/verify") == 5
    assert value(after, "olv_bob_files", status="accepted") == 1
    assert value(after, "olv_iies_files", status="rejected") == 1
    assert value(after, "olv_file_counts_up") == 1
    assert value(after, "olv_portal_query_log_queue_rows") >= 0


def test_route_templates_not_paths_and_no_personal_data(world: World) -> None:
    for n in range(3):
        loopback.get(f"{world.base}/api/v1/queries/{VIN_OK}{n}", timeout=10)
        loopback.get(f"{world.base}/no-such-page-{VIN_NOWHERE}", timeout=10)
    world.verify(VIN_OK)
    response = loopback.get(f"{world.base}/metrics", timeout=10)
    for secret in (VIN_OK, VIN_NOWHERE, "P-OK", "officer1", world.token):
        assert secret not in response.text
    endpoints = {s["endpoint"] for s in labelled(scrape(world.base), "olv_portal_requests_total")}
    assert "/api/v1/queries/{query_id}" in endpoints and "other" in endpoints


def test_metrics_refused_to_what_a_proxy_forwarded_from_elsewhere(world: World) -> None:
    local = f"{world.base}/metrics"
    assert loopback.get(local, timeout=10).status_code == 200
    # Loopback is a trusted proxy by default: the address it forwarded is the source.
    for headers in (
        {"X-Forwarded-For": "198.51.100.7"},
        {"X-Forwarded-For": "127.0.0.1, 198.51.100.7"},
        {"Forwarded": "for=198.51.100.7"},
        {"X-Forwarded-For": "unknown"},
        {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "198.51.100.7"},
    ):
        response = loopback.get(local, headers=headers, timeout=10)
        assert response.status_code == 403, headers
        assert response.json()["error"] == "metrics are for the metrics networks only"


def test_request_id_from_caller_to_insurer_log(world: World) -> None:
    rid = "dmv-batch-20260101.0042"
    response = world.verify(VIN_OK, {"X-Request-ID": rid})
    assert response.status_code == 200 and response.headers["x-request-id"] == rid
    refused = world.verify(VIN_REFUSED, {"X-Request-ID": rid + "-b"})
    assert refused.headers["x-request-id"] == rid + "-b"
    # Without one, or with a hostile one, the portal makes its own.
    made = world.verify(VIN_OK).headers["x-request-id"]
    hostile = 'x"}{"level":"critical'
    replaced = world.verify(VIN_OK, {"X-Request-ID": hostile.encode()}).headers["x-request-id"]
    for new in (made, replaced):
        assert len(new) == 32 and all(c in "0123456789abcdef" for c in new)
    assert made != replaced
    time.sleep(0.5)
    insurer = [line for line in log_lines(world.insurer_log) if line.get("request_id")]
    by_id = {line["request_id"]: line for line in insurer}
    assert by_id[rid]["message"] == "SOAP request answered"
    assert by_id[rid]["response"] == "Confirmed"
    assert made in by_id and replaced in by_id  # the portal sends the id it answered with
    portal = [line for line in log_lines(world.portal_log) if line.get("request_id") == rid + "-b"]
    assert [(line["message"], line["naic"], line["outcome"]) for line in portal] == [
        ("insurer call failed", REFUSED_NAIC, "refused")
    ]
    assert hostile not in world.portal_log.read_text() + world.insurer_log.read_text()


def test_readyz_answers_503_within_a_second_on_a_hung_database(tmp_path: Path) -> None:
    with private_postgres() as pg:
        db.upgrade(pg.url)
        with portal_server({"OLV_DATABASE_URL": pg.url}, tmp_path) as portal:
            assert loopback.get(f"{portal.base}/readyz", timeout=10).status_code == 200
            pg.stop_all()
            try:
                for _ in range(3):
                    started = time.monotonic()
                    response = loopback.get(f"{portal.base}/readyz", timeout=10)
                    elapsed = time.monotonic() - started
                    assert response.status_code == 503 and elapsed < 1.5, elapsed
                assert loopback.get(f"{portal.base}/healthz", timeout=10).status_code == 200
                started = time.monotonic()
                samples = scrape(portal.base)  # the file counts give up, the rest is served
                assert time.monotonic() - started < 2.5
                assert value(samples, "olv_file_counts_up") == 0
                assert not labelled(samples, "olv_bob_files")
            finally:
                pg.continue_all()
            end = time.monotonic() + 15
            while loopback.get(f"{portal.base}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < end, "not ready after the database came back"
                time.sleep(0.2)
            assert value(scrape(portal.base), "olv_file_counts_up") == 1
