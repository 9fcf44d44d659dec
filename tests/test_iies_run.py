"""``olv iies run``, ``case``, ``letters`` and ``undeliverable`` on SQLite and PostgreSQL: cases
move with the guide's codes, a rerun or a crash mid-run changes nothing twice."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from enforcement.case_settings import CaseSettings
from enforcement.models import Activity, Letter
from enforcement.models import Case as CaseRow
from enforcement.run import run
from olv import db
from olv.cli import run as olv_run
from tests.helpers.iies_cases import activities, add_registrant, add_txn

D0 = date(2026, 3, 2)
VIN = "1HGCM82633A004352"
SETTINGS = CaseSettings()


def day(n: int) -> date:
    return D0 + timedelta(days=n)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = olv_run(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def count(engine: Engine, model: type) -> int:
    with db.transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_cancellation_to_letter_to_suspension_with_the_guide_codes(
    engine: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, reg, "NBS", "11111", day(-200))
    add_txn(engine, reg, "XLC", "11111", day(0))

    first = run(engine, day(0), SETTINGS)
    assert first["transactions_matched"] == 2 and first["cases_opened"] == 1
    assert run(engine, day(9), SETTINGS)["letters"] == 0
    tenth = run(engine, day(10), SETTINGS)
    assert tenth["letters"] == 1
    again = run(engine, day(10), SETTINGS)  # the same day again changes nothing
    assert {k: v for k, v in again.items() if k != "date"} == dict.fromkeys(
        [k for k in again if k != "date"], 0
    )
    assert run(engine, day(40), SETTINGS)["suspensions"] == 1
    assert activities(engine, reg) == [
        ("NBS", day(-200).isoformat(), None),
        ("XLC", day(0).isoformat(), "NEW"),
        ("LTF", day(10).isoformat(), "FIQ"),
        ("RSI", day(40).isoformat(), "IRS"),
    ]

    code, out, _ = cli(capsys, "iies", "case", VIN)
    record = json.loads(out)
    assert code == 0 and record["vin"] == VIN and record["plate"] == "ABC123"
    assert record["case_state"] == "IRS"
    assert [a["code"] for a in record["activities"]] == ["NBS", "XLC", "LTF", "RSI"]
    doc_ids = [a["doc_id"] for a in record["activities"] if a["doc_id"]]
    assert len(doc_ids) == 2 and all(len(d) == 10 and d.isdigit() for d in doc_ids)
    code, out, _ = cli(capsys, "iies", "case", "--doc", doc_ids[0])
    assert code == 0 and json.loads(out) == record
    # No registrant data in the inquiry answer.
    assert "SMITH" not in out and "ELM" not in out

    if shutil.which("pdftotext"):
        code, out, _ = cli(
            capsys, "iies", "letters", "--date", day(10).isoformat(), "-o", str(tmp_path)
        )
        assert code == 0 and json.loads(out)["letters"] == 1
        with (tmp_path / "mailing.csv").open(encoding="utf-8") as handle:
            (row,) = list(csv.DictReader(handle))
        assert row["doc_id"] == doc_ids[0] and row["name"] == "JOHN SMITH"
        text = subprocess.run(
            ["pdftotext", str(tmp_path / row["file"]), "-"], capture_output=True, text=True
        ).stdout
        assert "FIRST NOTICE" in text and day(40).isoformat() in text and "2003 HONDA" in text


def test_case_lookup_of_an_unknown_vin_or_id_exits_1_and_bad_input_2(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    add_registrant(engine, "ABC123", VIN)
    assert cli(capsys, "iies", "case", VIN)[0] == 1  # registered, nothing on its record
    assert cli(capsys, "iies", "case", "2T1BURHE0JC014706")[0] == 1
    assert cli(capsys, "iies", "case", "--doc", "1234567897")[0] == 1
    assert cli(capsys, "iies", "case", "--doc", "12345")[0] == 2
    assert cli(capsys, "iies", "case")[0] == 2
    assert cli(capsys, "iies", "run", "--date", "2026-02-30")[0] == 2


def test_new_business_after_a_lapse_closes_with_days_and_penalty(engine: Engine) -> None:
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, reg, "XLC", "11111", day(0))
    run(engine, day(0), SETTINGS)
    run(engine, day(10), SETTINGS)
    add_txn(engine, reg, "NBS", "22222", day(25))
    summary = run(engine, day(27), SETTINGS)
    assert summary["cases_closed"] == 1
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.case_state, case.close_activity, case.reason) == ("CLC", "NBS", "R09")
        assert (case.lapse_days, case.civil_penalty_eligible) == (25, True)
        assert case.closed_on == day(27) and case.next_due is None


def test_backdated_new_business_closes_without_lapse(engine: Engine) -> None:
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, reg, "XLC", "11111", day(0))
    run(engine, day(0), SETTINGS)
    add_txn(engine, reg, "NBS", "22222", day(0))
    run(engine, day(3), SETTINGS)
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.case_state, case.lapse_days) == ("CLN", 0)


def test_rescinded_cancellation_after_a_letter_sends_a_rescission_notice(engine: Engine) -> None:
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, reg, "XLC", "11111", day(0))
    for n in (0, 10):
        run(engine, day(n), SETTINGS)
    add_txn(engine, reg, "REC", "11111", day(0))
    assert run(engine, day(12), SETTINGS)["letters"] == 1
    assert [a[0] for a in activities(engine, reg)] == ["XLC", "REC", "LTF", "LTR"]
    with db.transaction(engine) as session:
        assert session.scalars(select(CaseRow.case_state)).one() == "CLS"
        assert {letter.type for letter in session.scalars(select(Letter))} == {"LTF", "LTR"}


def test_future_cancellation_waits_for_its_date(engine: Engine) -> None:
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, reg, "NBS", "11111", day(-100))
    add_txn(engine, reg, "XLC", "11111", day(20))
    assert run(engine, day(0), SETTINGS)["transactions_matched"] == 1
    assert count(engine, CaseRow) == 0
    summary = run(engine, day(20), SETTINGS)
    assert summary["transactions_matched"] == 1 and summary["cases_opened"] == 1


def test_unmatched_and_edit_error_transactions_move_nothing(engine: Engine) -> None:
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, None, "XLC", "11111", day(0), disposition="U")
    add_txn(engine, reg, "XLC", "11111", day(0), disposition="E")
    assert run(engine, day(30), SETTINGS)["transactions_matched"] == 0
    assert count(engine, CaseRow) == 0 and count(engine, Activity) == 0


def test_a_crash_mid_run_then_a_rerun_changes_everything_once(engine: Engine) -> None:
    regs = [add_registrant(engine, f"PL{i}", f"1HGCM82633A00435{i}") for i in range(4)]
    for reg in regs:
        add_txn(engine, reg, "XLC", "11111", day(0))

    class Crash(Exception):
        pass

    def crash_after_second(number: int) -> None:
        if number == 1:
            raise Crash

    with pytest.raises(Crash):
        run(engine, day(10), SETTINGS, batch=1, after_batch=crash_after_second)
    assert count(engine, CaseRow) == 2  # two batches committed, the rest untouched
    rerun = run(engine, day(10), SETTINGS, batch=1)
    assert rerun["cases_opened"] == 2 and rerun["letters"] == 2
    assert count(engine, CaseRow) == 4 and count(engine, Letter) == 4
    for reg in regs:
        assert [a[0] for a in activities(engine, reg)] == ["XLC", "LTF"]
    assert run(engine, day(10), SETTINGS)["activities"] == 0


def test_undeliverable_mail_is_recorded_once(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, reg, "XLC", "11111", day(0))
    run(engine, day(10), SETTINGS)
    with db.transaction(engine) as session:
        doc_id = session.scalars(select(Letter.doc_id)).one()
    code, out, _ = cli(capsys, "iies", "undeliverable", doc_id, "--date", day(15).isoformat())
    assert code == 0 and json.loads(out)["recorded"] is True
    code, out, _ = cli(capsys, "iies", "undeliverable", doc_id, "--date", day(16).isoformat())
    assert code == 0 and json.loads(out) == {
        "doc_id": doc_id,
        "undeliverable_on": day(15).isoformat(),
        "recorded": False,
    }
    assert [a[0] for a in activities(engine, reg)] == ["XLC", "LTF", "UND"]
    assert cli(capsys, "iies", "undeliverable", "1234567897")[0] == 1


def test_day_counts_come_from_the_environment(
    engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLV_IIES_GRACE_DAYS", "2")
    reg = add_registrant(engine, "ABC123", VIN)
    add_txn(engine, reg, "XLC", "11111", day(0))
    code, out, _ = cli(capsys, "iies", "run", "--date", day(2).isoformat())
    assert code == 0 and json.loads(out)["letters"] == 1
