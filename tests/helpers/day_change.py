"""Keeping date-relative tests away from a change of date.

Many tests build their data and their expected answers from "today" (the decision table's
"tomorrow is in the future", "cancelled today"), some when the module is imported and some when
a module's server starts. The service reads its own clock for every request, so a run that
crosses midnight would compare yesterday's expectations with today's answers. Instead of
faking the clock of every process a test starts (servers, browsers, sshd), a run that would
cross a change of date waits for it first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo


def seconds_to_next_midnight(zone: tzinfo = UTC, now: datetime | None = None) -> float:
    """Seconds until the date in ``zone`` next changes."""
    current = (now or datetime.now(UTC)).astimezone(zone)
    midnight = datetime.combine(current.date() + timedelta(days=1), datetime.min.time(), zone)
    return (midnight - current).total_seconds()


def wait_past_midnight(
    within: float,
    zone: tzinfo = UTC,
    say: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """If the date in ``zone`` changes in less than ``within`` seconds, wait until just after.

    Returns the seconds waited (0.0 when the change is far enough away).
    """
    remaining = seconds_to_next_midnight(zone)
    if remaining >= within:
        return 0.0
    pause = remaining + 2.0
    say(
        f"the date in {zone} changes in {remaining:.0f} s; waiting {pause:.0f} s so that "
        "date-relative tests do not straddle midnight"
    )
    sleep(pause)
    return pause
