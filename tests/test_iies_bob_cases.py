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

from bob_loader.models import BobCurrent, BobRecord
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


def _open_bob_case(engine: Engine) -> int:
    """Two monthly loads without ``MISSING``: its case is open; the registration's id."""
    for month in (9, 10):
        monthly_load(engine, date(2026, month, 5))
        run(engine, date(2026, month, 6), SETTINGS)
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.open_activity, case.closed_on) == ("BOB", None)
        return case.registration_id


def test_the_vin_back_in_a_later_load_closes_the_case(engine: Engine, tmp_path: Path) -> None:
    gone = _open_bob_case(engine)
    assert run(engine, date(2026, 10, 16), SETTINGS)["letters"] == 1  # LTF: the case moved on
    # November's book carries the VIN again, on a policy in force since before the case opened
    load_bob(engine, tmp_path, [("10001", "P-1", IN_BOOK), ("10001", "P-2", MISSING)])
    monthly_load(engine, date(2026, 11, 5))
    summary = run(engine, date(2026, 11, 6), SETTINGS)
    assert summary["cases_closed"] == 1
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.case_state, case.close_activity, case.closed_on) == (
            "CLN",
            "LOD",
            date(2026, 11, 6),
        )
        assert case.next_due is None and case.lapse_days == 0
    assert [a[0] for a in activities(engine, gone)] == ["NIA", "LTF", "LOD"]
    assert absences(engine) == {}
    # nothing twice: the same day again, and the following days, leave the closed case alone
    assert run(engine, date(2026, 11, 6), SETTINGS)["cases_closed"] == 0
    assert run(engine, date(2026, 12, 1), SETTINGS)["cases_opened"] == 0
    assert [a[0] for a in activities(engine, gone)] == ["NIA", "LTF", "LOD"]


def test_a_vin_back_on_a_newer_policy_closes_with_its_lapse(engine: Engine, tmp_path: Path) -> None:
    gone = _open_bob_case(engine)
    opened = date(2026, 10, 6)
    lapse_end = date(2026, 11, 1)
    load_bob(engine, tmp_path, [("10001", "P-1", IN_BOOK), ("10001", "P-2", MISSING)])
    monthly_load(engine, date(2026, 11, 5))
    with db.transaction(engine) as session:  # the new policy took effect on 1 November
        session.execute(
            update(BobRecord).where(BobRecord.vin == MISSING).values(effective_date=lapse_end)
        )
    run(engine, date(2026, 11, 6), SETTINGS)
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.case_state, case.lapse_days, case.reason) == (
            "CLC",
            (lapse_end - opened).days,
            "R09",
        )
        assert case.civil_penalty_eligible is True
    assert activities(engine, gone)[-1][0] == "LOD"


def test_a_confirmed_broadcast_closes_an_open_case(engine: Engine) -> None:
    gone = _open_bob_case(engine)  # no insurer takes VIN-only questions yet: nobody confirmed
    with canned_insurer(200, answer(V0809, "Confirmed", naic="20002")) as url:
        add_insurer(engine, "20002", url, accepts_unknown=True)
        summary = run(engine, date(2026, 11, 2), SETTINGS)  # a new month: asked again
    assert summary["cases_closed"] == 1
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.case_state, case.close_activity, case.lapse_days) == ("CLN", "IPA", 0)
        absence = session.scalars(select(BobAbsence)).one()
        assert (absence.broadcast_on, absence.broadcast_status) == (date(2026, 11, 2), "Confirmed")
    assert [a[0] for a in activities(engine, gone)][-1] == "IPA"


def test_an_unconfirmed_broadcast_leaves_the_case_open_and_asks_once_a_month(
    engine: Engine,
) -> None:
    _open_bob_case(engine)
    with canned_insurer(200, answer(V0809, "Unconfirmed", naic="20002")) as url:
        add_insurer(engine, "20002", url, accepts_unknown=True)
        assert run(engine, date(2026, 11, 2), SETTINGS)["cases_closed"] == 0
        run(engine, date(2026, 11, 3), SETTINGS)
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert case.closed_on is None
        absence = session.scalars(select(BobAbsence)).one()
        # asked on the 2nd, not again on the 3rd (the same month)
        assert (absence.broadcast_on, absence.broadcast_status) == (
            date(2026, 11, 2),
            "Unconfirmed",
        )
