"""The SOAP service's operations surface on a real ``olv soap serve``: ``/metrics`` summed over
two worker processes (prometheus-client's multiprocess mode), counted by endpoint, version,
response and reason code; refused to anyone outside ``OLV_METRICS_NETWORKS``, also when a
forwarding header claims loopback; ``/readyz`` 503 within a second on a hung database; the
request id logged, and a hostile one never."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from olv import db
from olv.config import Settings
from olv.metrics import may_scrape
from tests.helpers import data, loopback
from tests.helpers.private_pg import private_postgres
from tests.helpers.scrape import labelled, log_lines, outside_address, scrape, value
from tests.helpers.soap import (
    Server,
    codes_of,
    envelope,
    free_port,
    post,
    request_xml,
    response_element,
    start_until_healthy,
)

pytestmark = pytest.mark.slow

V0809 = "/iicmva/00200809"


@contextmanager
def soap_workers(
    env: dict[str, str], log_dir: Path, workers: int = 2, host: str = "127.0.0.1"
) -> Iterator[Server]:
    port = free_port()
    log = log_dir / f"soap-{port}.log"
    full_env = {**os.environ, "OLV_AUDIT_FLUSH_SECONDS": "0.1"}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # only when the test sets one
    full_env.update(env)
    command = [sys.executable, "-m", "olv", "soap", "serve", "--host", host, "--port", str(port)]
    command += ["--workers", str(workers)]
    base = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
    server = Server(base, start_until_healthy(command, full_env, log, base, "server"), log)
    try:
        yield server
    finally:
        server.stop()


def _workers_of(server: Server) -> list[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def _ask(server: Server, vin: str, headers: dict[str, str | bytes] | None = None) -> list[str]:
    response = post(server.url(V0809), envelope(request_xml("00200809", vin=vin)), headers=headers)
    assert response.status_code == 200
    code, reasons = codes_of(response_element(response))
    return [code, *reasons]


def test_counts_by_reason_code_summed_over_two_workers(db_url: str, tmp_path: Path) -> None:
    data.load_policies(db_url, tmp_path)
    shared = tmp_path / "prom"
    shared.mkdir()
    (shared / "counter_99999999.db").write_bytes(b"left from an earlier run")
    env = {"OLV_DATABASE_URL": db_url, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    with soap_workers(env, tmp_path) as server:
        assert not (shared / "counter_99999999.db").exists()  # cleaned at start
        confirmed = [_ask(server, data.VIN_OK) for _ in range(12)]
        unconfirmed = [_ask(server, data.VIN_NOWHERE) for _ in range(7)]
        assert {tuple(c) for c in confirmed} == {("Confirmed",)}
        reasons = {" ".join(c[1:]) for c in unconfirmed}
        assert len(reasons) == 1 and reasons != {""}
        reason = reasons.pop()
        assert loopback.get(server.url(f"{V0809}?wsdl"), timeout=10).status_code == 200

        # Both workers answered and wrote their own values; every scrape, whichever worker
        # answers it, shows the sum.
        pids = {int(p.stem.rsplit("_", 1)[1]) for p in shared.glob("counter_*.db")}
        assert pids >= set(_workers_of(server)) and len(_workers_of(server)) == 2
        for _ in range(6):
            samples = scrape(server.base)
            name = "olv_soap_requests_total"
            common = {"endpoint": V0809, "version": "00200809", "status": "200"}
            assert value(samples, name, response="Confirmed", reasons="", **common) == 12
            assert value(samples, name, response="Unconfirmed", reasons=reason, **common) == 7
            assert value(samples, name, endpoint=V0809, response="", status="200") == 1  # WSDL
            assert value(samples, "olv_soap_request_seconds_count", endpoint=V0809) == 20
            assert value(samples, "olv_soap_audit_queue_rows") >= 0
        # No label carries what a request said: no VIN, policy number or requester.
        text = loopback.get(f"{server.base}/metrics", timeout=10).text
        for secret in (data.VIN_OK, data.VIN_NOWHERE, "P-OK", "127.0.0.1"):
            assert secret not in text


def test_unknown_paths_share_one_label(db_url: str, tmp_path: Path) -> None:
    with soap_workers({"OLV_DATABASE_URL": db_url}, tmp_path, workers=1) as server:
        for n in range(3):
            loopback.get(f"{server.base}/probe-{n}", timeout=10)
        samples = scrape(server.base)
        assert value(samples, "olv_soap_requests_total", endpoint="other", status="404") == 3
        assert all(
            not s["endpoint"].startswith("/probe")
            for s in labelled(samples, "olv_soap_requests_total")
        )


def test_private_metrics_directory_made_and_removed(db_url: str, tmp_path: Path) -> None:
    with soap_workers({"OLV_DATABASE_URL": db_url}, tmp_path, workers=1) as server:
        worker = _workers_of(server)[0]
        # The worker's values are memory-mapped files in the directory made for this start.
        maps = Path(f"/proc/{worker}/maps").read_text().split()
        files = [Path(word) for word in maps if word.endswith(f"_{worker}.db")]
        assert files, "no memory-mapped value files"
        folder = files[0].parent
        assert folder.name.startswith("olv-metrics-") and folder.is_dir()
        scrape(server.base)
    assert not folder.exists()


def test_metrics_refused_outside_the_metrics_networks(db_url: str, tmp_path: Path) -> None:
    outside = outside_address()
    if outside is None:
        print("skipping: this machine has no address other than loopback")
        pytest.skip("no non-loopback address")
    env = {"OLV_DATABASE_URL": db_url}
    with soap_workers(env, tmp_path, workers=1, host="0.0.0.0") as server:
        port = server.base.rsplit(":", 1)[1]
        remote = f"http://{outside}:{port}/metrics"
        # From an address of its own, not loopback: refused, whatever header it writes.
        assert loopback.get(remote, timeout=10).status_code == 403
        for header in ("X-Forwarded-For", "X-Real-IP"):
            assert (
                loopback.get(remote, headers={header: "127.0.0.1"}, timeout=10).status_code == 403
            )
        forwarded = {"Forwarded": "for=127.0.0.1"}
        assert loopback.get(remote, headers=forwarded, timeout=10).status_code == 403
        # From loopback, a trusted proxy by default: what the proxy forwarded is the source.
        local = f"{server.base}/metrics"
        assert loopback.get(local, timeout=10).status_code == 200
        relayed = {"X-Forwarded-For": "127.0.0.1, 198.51.100.7"}
        assert loopback.get(local, headers=relayed, timeout=10).status_code == 403
        # The SOAP answers themselves are not behind the rule.
        assert loopback.get(f"http://{outside}:{port}/healthz", timeout=10).status_code == 200
    with soap_workers(
        {**env, "OLV_METRICS_NETWORKS": f"{outside}/32"}, tmp_path, workers=1, host="0.0.0.0"
    ) as server:
        port = server.base.rsplit(":", 1)[1]
        assert loopback.get(f"http://{outside}:{port}/metrics", timeout=10).status_code == 200
        assert loopback.get(f"{server.base}/metrics", timeout=10).status_code == 403


@pytest.mark.parametrize(
    ("peer", "headers", "allowed"),
    [
        ("127.0.0.1", {}, True),
        ("::1", {}, True),
        ("10.1.2.3", {}, False),
        ("10.1.2.3", {"HTTP_X_FORWARDED_FOR": "127.0.0.1"}, False),  # untrusted peer
        ("10.1.2.3", {"HTTP_FORWARDED": "for=127.0.0.1"}, False),
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "10.9.9.9"}, False),  # trusted proxy relays
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "127.0.0.1, 10.9.9.9"}, False),
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "10.9.9.9, 127.0.0.1"}, True),  # proxy wrote it
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "unknown"}, False),
    ],
)
def test_scrape_rule(peer: str, headers: dict[str, str], allowed: bool) -> None:
    assert may_scrape({"REMOTE_ADDR": peer, **headers}, Settings()) is allowed


def test_readyz_answers_503_within_a_second_on_a_hung_database(tmp_path: Path) -> None:
    with private_postgres() as pg:
        db.upgrade(pg.url)
        data.load_policies(pg.url, tmp_path)
        with soap_workers({"OLV_DATABASE_URL": pg.url}, tmp_path, workers=1) as server:
            assert loopback.get(f"{server.base}/readyz", timeout=10).status_code == 200
            _ask(server, data.VIN_OK)
            pg.stop_all()
            try:
                for _ in range(3):  # a probe per call, one query in flight: never slower
                    started = time.monotonic()
                    response = loopback.get(f"{server.base}/readyz", timeout=10)
                    elapsed = time.monotonic() - started
                    assert response.status_code == 503 and elapsed < 1.5, elapsed
                assert loopback.get(f"{server.base}/healthz", timeout=10).status_code == 200
                # Answers go on (SYSU); their audit rows wait, and the gauges say so.
                for _ in range(3):
                    assert _ask(server, data.VIN_OK)[0] == "Unconfirmed"
                time.sleep(2.5)
                samples = scrape(server.base)
                assert value(samples, "olv_soap_audit_queue_rows") >= 3
                assert value(samples, "olv_soap_audit_lag_seconds") >= 1.0
            finally:
                pg.continue_all()
            end = time.monotonic() + 15
            while loopback.get(f"{server.base}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < end, "not ready after the database came back"
                time.sleep(0.2)
            end = time.monotonic() + 15
            while value(scrape(server.base), "olv_soap_audit_queue_rows") != 0:
                assert time.monotonic() < end, "audit rows still waiting"
                time.sleep(0.2)


def test_request_id_logged_and_a_hostile_one_never(db_url: str, tmp_path: Path) -> None:
    data.load_policies(db_url, tmp_path)
    with soap_workers({"OLV_DATABASE_URL": db_url}, tmp_path, workers=1) as server:
        _ask(server, data.VIN_OK, {"X-Request-ID": "portal-7f3a.01_x"})
        hostile = ['abc"}{"level":"error', "a b", "é", "x" * 65, "1,2"]
        for value_ in hostile:
            _ask(server, data.VIN_OK, {"X-Request-ID": value_.encode()})
        _ask(server, data.VIN_NOWHERE)  # no id: no line
        time.sleep(0.3)
    lines = [line for line in log_lines(server.log) if line["message"] == "SOAP request answered"]
    assert [line.get("request_id") for line in lines] == ["portal-7f3a.01_x"]
    assert lines[0]["response"] == "Confirmed" and lines[0]["endpoint"] == V0809
    text = server.log.read_text()
    assert data.VIN_OK not in text and 'abc\\"' not in text and "xxxxxxxxxx" not in text
