"""Cached tokens are re-read in the background without a burst: each falls due at its own
moment (tokens cached together would otherwise fall due together every half minute, for
good), and the re-reads take turns on one thread instead of all running at once beside the
requests (portal.cache, portal.deps)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from olv import db
from olv.config import Settings
from portal import cache as cache_module
from portal import deps
from portal.app import create_app
from portal.cache import TtlCache
from portal.settings import PortalSettings
from tests.helpers.portal import add_user

TOKENS = 6


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def monotonic(self) -> float:
        return self.now


def _due_at(monkeypatch: pytest.MonkeyPatch, spread: float, ages: list[float]) -> list[int]:
    """How many of 200 entries stored at one moment are due at each age."""
    clock = Clock()
    monkeypatch.setattr(cache_module, "time", clock)
    cache = TtlCache[int, str](60.0, refresh_after=30.0, refresh_spread=spread)
    for key in range(200):
        cache.put(key, "owner")
    stored = clock.now
    counts = []
    for age in ages:
        clock.now = stored + age
        counts.append(sum(cache.lookup(key)[1] for key in range(200)))
    return counts


def test_entries_stored_together_fall_due_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without a spread every entry falls due at the same moment.
    assert _due_at(monkeypatch, 0.0, [29.9, 30.0]) == [0, 200]
    # With half of it, between 15 and 30 s; a fair share on each side of the middle.
    before, middle, after = _due_at(monkeypatch, 0.5, [14.9, 22.5, 30.0])
    assert before == 0 and after == 200
    assert 40 < middle < 160


def test_background_rechecks_of_cached_tokens_take_turns(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(db_url)
    tokens = [add_user(engine, f"dmv{i}", "dmv") for i in range(TOKENS)]
    engine.dispose()
    running, most, rechecked = 0, 0, 0
    guard = threading.Lock()
    real = deps._authenticate

    def slow_read(app: Any, token: str, source: str | None) -> Any:
        nonlocal running, most, rechecked
        with guard:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.05)  # long enough for every re-read asked at once to overlap
            return real(app, token, source)
        finally:
            with guard:
                running -= 1
                rechecked += 1

    monkeypatch.setattr(deps, "_authenticate", slow_read)
    app = create_app(Settings(database_url=db_url), PortalSettings())
    assert app.state.token_cache.refresh_spread > 0  # the portal's cache spreads its re-reads
    # Here every cached token is due for its re-read at once: the burst the lane must spread.
    app.state.token_cache = TtlCache[str, Any](60.0, refresh_after=0.0)
    with TestClient(app, raise_server_exceptions=False) as client:

        def verify(token: str) -> int:
            # A body that does not validate: 422 once the token is accepted.
            headers = {"Authorization": f"Bearer {token}"}
            return client.post("/api/v1/verify", json={}, headers=headers).status_code

        assert [verify(token) for token in tokens] == [422] * TOKENS  # read and cached
        with guard:
            read = rechecked
        # A request asks the cache once: a second look-up (the token checked before the body,
        # then the rate-limited one) found each new entry due and re-read it in the background.
        time.sleep(0.3)
        with guard:
            assert (rechecked, running) == (read, 0)
            most, rechecked = 0, 0
        # Each token is served from the cache and starts its re-read in the background.
        assert [verify(token) for token in tokens] == [422] * TOKENS
        deadline = time.monotonic() + 10
        while rechecked < TOKENS and time.monotonic() < deadline:
            time.sleep(0.02)
    assert rechecked == TOKENS
    assert most == 1
