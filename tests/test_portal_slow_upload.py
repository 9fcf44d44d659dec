"""Requests whose body arrives slowly over a healthy state database (a real ``olv portal
serve``; a raw socket sends the head at once, then the body a few bytes at a time): none is told
that the database is unavailable, and the log does not say so either.

- A verification (the API's fast path, and the route behind it) whose body took longer than its
  budget gets 408 saying that the request waited too long to be read; nothing was asked.
- A batch (the API's, and the batch page's CSV upload) is answered whole: its items have budgets
  of their own, from their turns, and counting them against the rate limit waits for the
  database as a request would, from when the batch is in.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from olv import db
from tests.helpers.portal import Portal, add_user, portal_server
from tests.helpers.scrape import log_lines

pytestmark = pytest.mark.slow

BUDGET = 2.0  # OLV_PORTAL_BUDGET_SECONDS of this portal: each slow body takes longer
SLOW_SECONDS = BUDGET + 1.2  # how long each body takes to arrive
BATCH_ITEMS = 120


@dataclass
class Answer:
    status: int
    body: bytes
    upload_seconds: float


@pytest.fixture(scope="module")
def served(
    module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Portal, str]]:
    engine = db.make_engine(module_db_url)
    token = add_user(engine, "dmv-system", "dmv")  # may verify, batches included
    engine.dispose()
    folder = tmp_path_factory.mktemp("slow-upload")
    env = {"OLV_DATABASE_URL": module_db_url, "OLV_PORTAL_BUDGET_SECONDS": str(BUDGET)}
    with portal_server(env, folder) as portal:
        yield portal, token


def _slowly(base: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
    """POST ``body`` to ``path``: the head at once, then the body in about 12 pieces spread over
    ``SLOW_SECONDS``; the answer read to the end (the request asks to close)."""
    address = urlsplit(base)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
        )
        started = time.monotonic()
        step = max(1, -(-len(body) // 12))
        pieces = [body[at : at + step] for at in range(0, len(body), step)]
        for piece in pieces:
            time.sleep(SLOW_SECONDS / len(pieces))
            sock.sendall(piece)
        upload_seconds = time.monotonic() - started
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    head, _, answer = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        answer = _unchunked(answer)
    return Answer(int(status_line.split()[1]), answer, upload_seconds)


def _unchunked(framed: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, framed = framed.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, framed = body + framed[:size], framed[size + 2 :]


def _multipart(csv_text: str) -> tuple[str, bytes]:
    boundary = "slow-upload-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n{csv_text}\r\n--{boundary}--\r\n"
    ).encode()
    return f"multipart/form-data; boundary={boundary}", body


def test_slow_bodies_are_never_told_the_database_is_unavailable(
    served: tuple[Portal, str],
) -> None:
    portal, token = served
    bearer = {"Authorization": f"Bearer {token}"}
    one = json.dumps({"vin": "1HGCM82633A004352"}).encode()  # no record: asked of nobody
    vins = [f"SLOWUPLOAD{i:07d}" for i in range(BATCH_ITEMS)]
    batch = json.dumps({"items": [{"vin": vin} for vin in vins]}).encode()
    form_type, form = _multipart("vin\n" + "\n".join(vins) + "\n")
    sends = {
        # the fast path takes exactly this content type
        "verify": ("/api/v1/verify", {"Content-Type": "application/json"}, one),
        # any other goes to the route
        "verify-route": (
            "/api/v1/verify",
            {"Content-Type": "application/json; charset=utf-8"},
            one,
        ),
        "api-batch": ("/api/v1/verify/batch", {"Content-Type": "application/json"}, batch),
        "batch-page": ("/batch", {"Content-Type": form_type, "Accept": "text/csv"}, form),
    }
    with ThreadPoolExecutor(len(sends)) as pool:
        running = {
            name: pool.submit(_slowly, portal.base, path, {**bearer, **headers}, body)
            for name, (path, headers, body) in sends.items()
        }
        answers = {name: future.result() for name, future in running.items()}

    for name, answer in answers.items():
        assert answer.upload_seconds > BUDGET, (name, answer.upload_seconds)
    seen = {name: (answer.status, answer.body[:200]) for name, answer in answers.items()}
    statuses = {name: status for name, (status, _) in seen.items()}
    expected = {"verify": 408, "verify-route": 408, "api-batch": 200, "batch-page": 200}
    assert statuses == expected, seen
    for name in ("verify", "verify-route"):
        error = json.loads(answers[name].body)
        assert (error["ok"], error["status"]) == (False, 408)
        assert "waited" in error["error"] and "a slow upload" in error["error"], error
    api_batch = answers["api-batch"]
    assert api_batch.status == 200, api_batch.body[:300]
    results = json.loads(api_batch.body)["results"]
    assert [r["vin"] for r in results] == vins
    page = answers["batch-page"]
    assert page.status == 200, page.body[:300]
    assert len(page.body.decode().strip().splitlines()) == BATCH_ITEMS + 1  # a header, a row each

    said = [line.get("message", "") for line in log_lines(portal.log)]
    assert not [m for m in said if "state database" in m or m.startswith("answered 5")], said
