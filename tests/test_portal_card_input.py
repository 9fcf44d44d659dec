"""``POST /api/v1/cards/verify`` on a real ``olv portal serve`` given what no card is (SPEC §7,
§5): bodies no card's text fits in, text that is no card, and files slow to read, which must
not hold the few decoders from everyone else past a request's budget, even after their
senders hang up."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from olv import db
from tests.helpers import loopback
from tests.helpers.idcards import png
from tests.helpers.portal import Portal, add_user, portal_server
from tests.test_idcards_images import renderers_of, slow_pdf

pytestmark = pytest.mark.slow
BUDGET = 2.5  # the portal's budget here: short, so that waiting for it stays short
URL = "/api/v1/cards/verify"


@pytest.fixture(scope="module")
def portal(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Portal, str]]:
    folder = tmp_path_factory.mktemp("card-input")
    path = folder / "olv.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    engine = db.make_engine(url)
    try:
        token = add_user(engine, "card-officer", "officer")
    finally:
        engine.dispose()
    env = {"OLV_DATABASE_URL": url, "OLV_PORTAL_BUDGET_SECONDS": str(BUDGET)}
    with portal_server(env, folder) as server:
        yield server, token


def test_bodies_no_card_fits_in(portal: tuple[Portal, str]) -> None:
    server, token = portal
    as_json = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(verify=loopback.TLS, base_url=server.base, timeout=30) as api:
        # Nested deeper than the parser goes: unreadable JSON like any other, not a crash.
        deep = api.post(URL, content=b"[" * 60_000, headers=as_json)
        assert deep.status_code == 422 and deep.json()["error"] == "body: not JSON", deep.text
        # Past 64 KiB a body is no card's text, JSON or plain, whatever it holds.
        for body, kind in (
            (b"[" * 100_000, "application/json"),
            (json.dumps({"barcode": "1" + " " * 70_000}).encode(), "application/json"),
            (b"1" * 70_000, "text/plain"),
        ):
            response = api.post(URL, content=body, headers={**as_json, "Content-Type": kind})
            assert response.status_code == 413, response.text
            assert "body over 65536 bytes" in response.json()["error"]
        # Text that is no card's barcode cannot be read (422), rather than "not valid".
        for text in ("1", " 1 "):
            response = api.post(URL, json={"barcode": text}, headers=as_json)
            assert response.status_code == 422, response.text
    log = server.log.read_text(errors="replace")
    assert "RecursionError" not in log and "Traceback" not in log


def _poll(condition: Callable[[], bool], seconds: float) -> bool:
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            return False
        time.sleep(0.02)
    return True


def test_slow_pdfs_hold_no_decoder_past_their_budget(portal: tuple[Portal, str]) -> None:
    """Two senders of tiny PDFs that render for minutes take both decoders and hang up; a
    photo sent meanwhile gets 503 before its budget is spent (not a wait of minutes), the
    renderers are killed at the senders' budget, and the next photo is read at once."""
    server, token = portal
    auth = {"Authorization": f"Bearer {token}"}
    slow, blank = slow_pdf(), png(Image.new("L", (600, 400), 255))
    pid = server.process.pid

    def hang_up_after_half_a_second() -> None:
        headers = {**auth, "Content-Type": "application/pdf"}
        with contextlib.suppress(httpx.TimeoutException):
            loopback.post(server.base + URL, content=slow, headers=headers, timeout=0.5)

    senders = [threading.Thread(target=hang_up_after_half_a_second) for _ in range(2)]
    sent = time.monotonic()
    for sender in senders:
        sender.start()
    assert _poll(lambda: len(renderers_of(pid)) == 2, 5), "the PDFs never reached pdftoppm"
    photo_headers = {**auth, "Content-Type": "image/png"}
    with httpx.Client(verify=loopback.TLS, base_url=server.base, timeout=15) as api:
        started = time.monotonic()
        busy = api.post(URL, content=blank, headers=photo_headers)
        assert busy.status_code == 503 and "busy" in busy.json()["error"], busy.text
        assert time.monotonic() - started < BUDGET + 1  # generous: its own deadline held
        for sender in senders:
            sender.join()
        # Killed by the senders' budget although nobody waits for the answer any more.
        assert _poll(lambda: renderers_of(pid) == [], sent + BUDGET + 3 - time.monotonic())
        started = time.monotonic()
        free = api.post(URL, content=blank, headers=photo_headers)
        assert free.status_code == 422 and "no PDF-417" in free.json()["error"], free.text
        assert time.monotonic() - started < BUDGET + 1
