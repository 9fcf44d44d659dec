"""The guard that keeps a test run from straddling midnight (tests/helpers/day_change.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from tests.helpers import day_change


def test_seconds_to_next_midnight_in_utc_and_in_a_zone() -> None:
    now = datetime(2026, 11, 29, 23, 50, tzinfo=UTC)
    assert day_change.seconds_to_next_midnight(UTC, now) == 600
    # 23:50 UTC is 13:50 on the 30th at UTC+14: ten hours and ten minutes to go
    assert day_change.seconds_to_next_midnight(ZoneInfo("Pacific/Kiritimati"), now) == 36600


def test_waits_only_when_midnight_is_closer_than_asked() -> None:
    said: list[str] = []
    slept: list[float] = []
    remaining = day_change.seconds_to_next_midnight()
    waited = day_change.wait_past_midnight(remaining + 60, say=said.append, sleep=slept.append)
    assert slept == [waited] and remaining < waited <= remaining + 3
    assert "straddle midnight" in said[0]
    said.clear()
    slept.clear()
    assert day_change.wait_past_midnight(0, say=said.append, sleep=slept.append) == 0.0
    assert said == [] and slept == []
