"""Book-of-business states on the same cases (SPEC §6): a registration missing from two
consecutive monthly loads that no insurer confirms to a live VIN-only broadcast opens a case;
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from bob_loader.models import BobCurrent
from enforcement.case_settings import CaseSettings
from enforcement.models import BobAbsence
from enforcement.models import Case as CaseRow
from enforcement.run import run
from olv import db
from olv.iicmva import V0809
from tests.helpers.iies_cases import activities, add_registrant
from tests.helpers.portal import add_insurer, answer, canned_insurer, load_bob

IN_BOOK = "1HGCM82633A004352"
MISSING = "1FTFW1ET9DFC10312"
SETTINGS = CaseSettings(bob_monitoring=True)


@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    engine = db.make_engine(db_url)
    add_registrant(engine, "INBOOK", IN_BOOK, state="ID")
    add_registrant(engine, "GONE", MISSING, state="ID")
    load_bob(engine, tmp_path, [("10001", "P-1", IN_BOOK)])
    yield engine
    engine.dispose()


def monthly_load(engine: Engine, day: date) -> None:
    """The month's book arrived on ``day`` (the loader stamps its own clock; tests move it)."""
    with db.transaction(engine) as session:
        stamp = datetime(day.year, day.month, day.day, 8, tzinfo=UTC)
        session.execute(update(BobCurrent).values(loaded_at=stamp))


def absences(engine: Engine) -> dict[int, int]:
    with db.transaction(engine) as session:
        return {a.registration_id: a.missing_loads for a in session.scalars(select(BobAbsence))}


def test_two_monthly_loads_without_the_vin_open_a_case_then_letters_follow(
    engine: Engine,
) -> None:
    monthly_load(engine, date(2026, 9, 5))
    first = run(engine, date(2026, 9, 6), SETTINGS)
    assert first["bob_absent"] == 1 and first["cases_opened"] == 0
    assert list(absences(engine).values()) == [1]
    again = run(engine, date(2026, 9, 20), SETTINGS)  # the same month: not counted twice
    assert again["bob_absent"] == 0 and list(absences(engine).values()) == [1]

    monthly_load(engine, date(2026, 10, 5))
    second = run(engine, date(2026, 10, 6), SETTINGS)
    assert second["bob_absent"] == 1 and second["cases_opened"] == 1
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.vin, case.open_activity, case.case_state) == (MISSING, "BOB", "NEW")
        gone = case.registration_id
    assert run(engine, date(2026, 10, 6), SETTINGS)["cases_opened"] == 0
    assert run(engine, date(2026, 10, 16), SETTINGS)["letters"] == 1
    assert [a[0] for a in activities(engine, gone)] == ["NIA", "LTF"]


def test_a_broadcast_confirmation_opens_no_case(engine: Engine) -> None:
    with canned_insurer(200, answer(V0809, "Confirmed", naic="20002")) as url:
        add_insurer(engine, "20002", url, accepts_unknown=True)
        for month in (9, 10):
            monthly_load(engine, date(2026, month, 5))
            summary = run(engine, date(2026, month, 6), SETTINGS)
            assert summary["cases_opened"] == 0
    with db.transaction(engine) as session:
        absence = session.scalars(select(BobAbsence)).one()
        assert (absence.missing_loads, absence.broadcast_status) == (2, "Confirmed")


def test_back_in_a_book_the_count_starts_again(engine: Engine, tmp_path: Path) -> None:
    monthly_load(engine, date(2026, 9, 5))
    run(engine, date(2026, 9, 6), SETTINGS)
    load_bob(engine, tmp_path, [("10001", "P-1", IN_BOOK), ("10001", "P-2", MISSING)])
    monthly_load(engine, date(2026, 10, 5))
    run(engine, date(2026, 10, 6), SETTINGS)
    assert absences(engine) == {}


def test_off_by_default(engine: Engine) -> None:
    monthly_load(engine, date(2026, 9, 5))
    summary = run(engine, date(2026, 9, 6), CaseSettings())
    assert "bob_absent" not in summary and absences(engine) == {}
