"""The shipped systemd units (deploy/systemd): every ``olv`` command they run exists with the
options they give it, every timer starts a shipped service, and systemd itself accepts the
files (``systemd-analyze verify``, with the installed ``olv`` in place of /opt/olv's).

The purge the timers run is tested here too, through the real command: old rows go, recent
ones stay, on SQLite and PostgreSQL."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from olv import db
from portal.models import InsurerCall, QueryLog, SecurityLog
from portal.querylog import COLUMNS
from tests.helpers import prewarmed

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deploy" / "systemd"
SHIPPED_OLV = "/opt/olv/.venv/bin/olv"
OLV = str(Path(sys.executable).with_name("olv"))
EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload")


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _olv_commands() -> list[tuple[str, list[str]]]:
    """(unit, words after ``olv``) for every olv command line of every unit, including those
    inside ``/bin/sh -c '…'``."""
    found = []
    for path in sorted(UNITS.glob("*.service")):
        service = _unit(path)["Service"]
        for key in EXEC_KEYS:
            line = service.get(key)
            if line is None or SHIPPED_OLV not in line:
                continue
            for match in re.finditer(re.escape(SHIPPED_OLV) + r"((?:\s+[^;&|'\n]+)?)", line):
                words = shlex.split(match.group(1).replace("%%", "%"))
                found.append((path.name, words))
    return found


def test_the_units_run_the_commands_this_release_ships() -> None:
    commands = _olv_commands()
    names = {unit for unit, _ in commands}
    assert {
        "olv-soap.service",
        "olv-iies-run.service",
        "olv-audit-purge.service",
        "olv-portal-purge.service",
    } <= names
    # Each command path once, with every option any unit gives it.
    options: dict[tuple[str, ...], set[tuple[str, str]]] = {}
    for unit, words in commands:
        subcommand: list[str] = []
        for word in words:  # the command path: words before the first option or argument
            if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            subcommand.append(word)
        given = options.setdefault(tuple(subcommand), set())
        given.update((unit, w) for w in words if w.startswith("--"))
    for n, (subcommand, given) in enumerate(sorted(options.items())):
        # The installed executable once (the units run it), the rest forked from the
        # launcher that has the imports done: the same command, without their cost.
        if n == 0:
            helped = subprocess.run(
                [OLV, *subcommand, "--help"], capture_output=True, text=True, timeout=60
            )
        else:
            helped = prewarmed.run([*subcommand, "--help"], timeout=60)
        assert helped.returncode == 0, (subcommand, helped.stderr)
        assert "Usage: olv " + " ".join(subcommand) in " ".join(helped.stdout.split()), subcommand
        for unit, option in sorted(given):
            assert option in helped.stdout, f"{unit}: olv {' '.join(subcommand)} has no {option}"


def test_every_timer_starts_a_shipped_service_on_a_valid_calendar() -> None:
    timers = sorted(UNITS.glob("*.timer"))
    assert {t.stem for t in timers} >= {"olv-iies-run", "olv-audit-purge", "olv-portal-purge"}
    for timer in timers:
        section = _unit(timer)["Timer"]
        target = section.get("Unit", f"{timer.stem}.service")
        assert (UNITS / target).is_file(), f"{timer.name} starts {target}, which is not shipped"
        assert _unit(UNITS / target)["Service"].get("Type") == "oneshot", target
        assert section.get("Persistent") == "true", timer.name
        calendar = section["OnCalendar"]
        analyze = shutil.which("systemd-analyze")
        if analyze:
            checked = subprocess.run(
                [analyze, "calendar", calendar], capture_output=True, text=True, timeout=30
            )
            assert checked.returncode == 0, (timer.name, checked.stderr)


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("skipping: systemd-analyze is not installed; the units were checked by parsing")
        pytest.skip("systemd-analyze is not installed; the units were checked by parsing")
    for path in [*UNITS.glob("*.service"), *UNITS.glob("*.timer")]:
        (tmp_path / path.name).write_text(path.read_text().replace(SHIPPED_OLV, OLV))
    units = sorted(str(p) for p in tmp_path.iterdir())
    verified = subprocess.run(
        [analyze, "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    complaints = [
        line
        for line in (verified.stdout + verified.stderr).splitlines()
        if str(tmp_path) in line or "olv-" in line
    ]
    assert verified.returncode == 0 and not complaints, verified.stderr


# --- the purge the portal timer runs ------------------------------------------------------


def _rows(url: str) -> dict[str, int]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                model.__tablename__: conn.scalar(select(func.count()).select_from(model)) or 0
                for model in (QueryLog, SecurityLog, InsurerCall)
            }
    finally:
        engine.dispose()


def test_olv_portal_purge_removes_only_log_rows_older_than_the_retention(db_url: str) -> None:
    now = datetime.now(UTC)
    engine = db.make_engine(db_url)
    try:
        with db.transaction(engine) as session:
            for n, age in enumerate((500, 401, 399, 1)):
                at = now - timedelta(days=age)
                query = dict.fromkeys(COLUMNS)
                query.update(
                    id=f"{n:032d}",
                    at=at,
                    username="officer1",
                    role="officer",
                    channel="api",
                    http_status=200,
                    reason_codes="",
                    latency_ms=1.0,
                )
                session.add(QueryLog(**query))
                session.add(SecurityLog(at=at, event="login", username="officer1", source="cli"))
                session.add(InsurerCall(at=at, naic="10001", outcome="ok", latency_ms=1.0))
    finally:
        engine.dispose()
    env = {**os.environ, "OLV_DATABASE_URL": db_url}
    result = subprocess.run(
        [OLV, "portal", "purge"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "6 log rows older than 400 days removed"
    assert _rows(db_url) == {"query_log": 2, "security_log": 2, "insurer_calls": 2}
    too_short = subprocess.run(
        [OLV, "portal", "purge", "--older-than", "30"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert too_short.returncode == 2
    assert _rows(db_url) == {"query_log": 2, "security_log": 2, "insurer_calls": 2}


def test_the_servers_may_hold_more_connections_than_systemds_default() -> None:
    """A connection is a descriptor; at systemd's soft limit (1,024) slow clients alone
    would leave no room for the next one."""
    for name in ("olv-soap.service", "olv-portal.service"):
        limits = [
            line.split("=", 1)[1]
            for line in (UNITS / name).read_text().splitlines()
            if line.startswith("LimitNOFILE=")
        ]
        assert limits and int(limits[0]) >= 65536, name
