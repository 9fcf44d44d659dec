"""Planned maintenance windows (``OLV_PORTAL_MAINTENANCE_WINDOWS``): what counts as inside."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from portal import maintenance
from portal.settings import PortalSettings

BOISE = ZoneInfo("America/Boise")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_weekly_windows_are_read_in_the_local_zone_start_included_end_excluded() -> None:
    windows = maintenance.parse_windows("12345@Sun 01:00-03:00")
    # Sunday 2026-12-06 01:00 in Boise (UTC-7) is 08:00 UTC.
    assert maintenance.planned(windows, "12345", at("2026-12-06T08:00"), BOISE)
    assert maintenance.planned(windows, "12345", at("2026-12-06T09:59"), BOISE)
    assert not maintenance.planned(windows, "12345", at("2026-12-06T10:00"), BOISE)
    assert not maintenance.planned(windows, "12345", at("2026-12-06T01:30"), BOISE)
    assert not maintenance.planned(windows, "54321", at("2026-12-06T08:30"), BOISE)


def test_dated_windows_and_windows_of_every_insurer() -> None:
    windows = maintenance.parse_windows(
        "12345@2026-12-06T23:00/2026-12-07T02:00 ; *@Wed 00:00-24:00"
    )
    assert maintenance.planned(windows, "12345", at("2026-12-07T01:59"), UTC)
    assert not maintenance.planned(windows, "12345", at("2026-12-07T02:00"), UTC)
    assert maintenance.planned(windows, "99999", at("2026-12-09T23:59"), UTC)  # a Wednesday
    assert maintenance.parse_windows("") == () and maintenance.parse_windows(" ; ") == ()
    assert not maintenance.planned((), "12345", at("2026-12-09T12:00"), UTC)


@pytest.mark.parametrize(
    "value",
    [
        "12345 Sun 01:00-03:00",  # no @
        "1234@Sun 01:00-03:00",  # not a NAIC
        "12345@Sunday 01:00-03:00",
        "12345@Sun 03:00-01:00",  # over midnight: two windows
        "12345@Sun 01:00-24:30",
        "12345@Sun 01:70-02:00",
        "12345@2026-12-07T02:00/2026-12-06T23:00",
        "12345@2026-12-06T23:00+00:00/2026-12-07T02:00+00:00",  # local times only
        "12345@2026-12-06",
    ],
)
def test_a_bad_entry_stops_the_settings_naming_it(value: str) -> None:
    with pytest.raises(ValidationError, match="maintenance_windows") as caught:
        PortalSettings(maintenance_windows=value)
    assert repr(value)[1:-1] in str(caught.value) or value in str(caught.value)


def test_the_settings_carry_the_parsed_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLV_PORTAL_MAINTENANCE_WINDOWS", "*@Sat 22:00-23:00")
    monkeypatch.delenv("OLV_PORTAL_BOB_DEADLINE_DAY", raising=False)
    settings = PortalSettings()
    assert settings.maintenance == (maintenance.Window("*", 5, 22 * 60, 23 * 60),)
    assert settings.bob_deadline_day == 10  # Idaho's due day
