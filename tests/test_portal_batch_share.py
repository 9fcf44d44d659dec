"""A DMV batch against a slow insurer leaves real-time queries their share of its slots, and
every batch item counts against the rate limit (issue: batches starving officers).

A real ``olv portal serve`` asks a real HTTP insurer that takes 0.5 s per answer; a batch of
a few hundred vehicles runs through the API while an officer asks single questions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from olv import db
from olv.vin import with_check_digit
from tests.helpers import loopback
from tests.helpers.portal import add_insurer, add_user, answer, portal_server

NAIC = "10001"
SLOW_SECONDS = 0.5
HALF_BUDGET_MS = 2500


@contextmanager
def insurer(delay: float) -> Iterator[str]:
    """An insurer that confirms every vehicle after ``delay`` seconds; yields its URL."""
    body = answer("00200809", "Confirmed", naic=NAIC)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real insurer's server

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            try:
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the portal stopped waiting for this answer: its budget was spent

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/iicmva/00200809"
    finally:
        server.shutdown()
        server.server_close()


def vins(count: int) -> list[str]:
    # No book of business holds them: each is broadcast to the one insurer.
    return [with_check_digit(f"1HGCM8263{n:08d}") for n in range(count)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def world(
    db_url: str, folder: Path, delay: float, env: dict[str, str] | None = None
) -> Iterator[tuple[str, str, str]]:
    """A portal in front of one insurer; yields its base URL, a dmv and an officer token."""
    engine = db.make_engine(db_url)
    with insurer(delay) as url:
        add_insurer(engine, NAIC, url, accepts_unknown=True)
        dmv = add_user(engine, "dmv-system", "dmv")
        officer = add_user(engine, "officer1", "officer")
        engine.dispose()
        with portal_server({"OLV_DATABASE_URL": db_url, **(env or {})}, folder) as portal:
            yield portal.base, dmv, officer


def test_an_officer_is_answered_while_a_batch_waits_on_a_slow_insurer(
    db_url: str, tmp_path: Path
) -> None:
    items = [{"vin": v} for v in vins(400)]
    with world(db_url, tmp_path, SLOW_SECONDS) as (base, dmv, officer):
        outcome: dict[str, httpx.Response] = {}

        def run_batch() -> None:
            outcome["batch"] = loopback.post(
                f"{base}/api/v1/verify/batch",
                json={"items": items},
                headers=bearer(dmv),
                timeout=300,
            )

        batch = threading.Thread(target=run_batch)
        batch.start()
        time.sleep(1.5)  # the batch has taken every slot it may by now
        answers = []
        with httpx.Client(
            verify=loopback.TLS, base_url=base, headers=bearer(officer), timeout=30
        ) as client:
            for vin in vins(405)[400:]:
                response = client.post("/api/v1/verify", json={"vin": vin})
                assert response.status_code == 200, response.text
                answers.append(response.json())
        still_running = batch.is_alive()
        batch.join(300)
    assert still_running, "the batch ended before the officer's questions: nothing was tested"
    # With a slot kept for them, an officer's question waits for nobody: the insurer's 0.5 s
    # and the portal's own work. Without one it queues behind the batch items waiting for a
    # slot until their budgets run out (up to 4.5 s: slow, or unable_to_verify).
    for body in answers:
        assert body["verdict"] == "confirmed", body
        assert body["elapsed_ms"] < HALF_BUDGET_MS, body
    result = outcome["batch"]
    assert result.status_code == 200, result.text
    assert len(result.json()["results"]) == len(items)


def test_every_batch_item_counts_against_the_rate_limit(db_url: str, tmp_path: Path) -> None:
    """600 a minute: 100 at once (10 s' worth), then 10 a second."""
    env = {"OLV_PORTAL_TOKEN_RATE_PER_MINUTE": "600"}
    with (
        world(db_url, tmp_path, 0.0, env) as (base, dmv, _),
        httpx.Client(verify=loopback.TLS, base_url=base, headers=bearer(dmv), timeout=60) as client,
    ):
        too_big = client.post(
            "/api/v1/verify/batch", json={"items": [{"vin": v} for v in vins(150)]}
        )
        assert too_big.status_code == 429, too_big.text
        assert "150 items" in too_big.json()["error"], too_big.text
        first = client.post("/api/v1/verify/batch", json={"items": [{"vin": v} for v in vins(80)]})
        assert first.status_code == 200, first.text
        again = client.post("/api/v1/verify/batch", json={"items": [{"vin": v} for v in vins(80)]})
        assert again.status_code == 429, again.text
        assert "80 items" in again.json()["error"] and "left" in again.json()["error"]
        assert int(again.headers["Retry-After"]) >= 1
