"""The whole enforcement path through the commands an operator and an insurer use: registrations
with registrants imported, an insurer's events loaded, the daily runs, the record, the letters
(SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from olv.cli import run as olv_run
from tests.helpers.iies import NAIC, REGISTRATION_HEADER, VIN_A, row, write_csv


def olv(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, object]]]:
    code = olv_run(list(args))
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_events_to_letter_to_suspension_through_the_commands(
    db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()

    def iso(days_ago: int) -> str:
        return (today - timedelta(days=days_ago)).isoformat()

    registrations = tmp_path / "registrations.csv"
    registrations.write_text(
        f"{REGISTRATION_HEADER}\n"
        f"ABC123,NY,{VIN_A},1,SMITH,JOHN,A,1980-02-03,,,12207,1 MAIN ST,ALBANY,active\n"
    )
    assert olv_run(["registrations", "import", str(registrations)]) == 0
    capsys.readouterr()
    events = write_csv(
        tmp_path / "events.csv",
        [
            row(txn_id="N1", type="NBS", effective_date=iso(400), plate="ABC123"),
            row(txn_id="X1", type="XLC", effective_date=iso(40), plate="ABC123"),
        ],
    )
    code, (ack,) = olv(capsys, "iies", "load", str(events))
    assert code == 0 and ack["status"] == "accepted", ack

    code, (first,) = olv(capsys, "iies", "run", "--date", iso(40))
    assert code == 0 and first["transactions_matched"] == 2 and first["cases_opened"] == 1
    code, (second,) = olv(capsys, "iies", "run", "--date", iso(30))
    assert second["letters"] == 1
    code, (again,) = olv(capsys, "iies", "run", "--date", iso(30))
    assert again["letters"] == 0 and again["activities"] == 0
    code, (third,) = olv(capsys, "iies", "run", "--date", iso(0))
    assert third["suspensions"] == 1

    code, (record,) = olv(capsys, "iies", "case", VIN_A)
    assert code == 0 and record["case_state"] == "IRS"
    assert [a["code"] for a in record["activities"]] == ["NBS", "XLC", "LTF", "RSI"]
    letter_id = record["activities"][2]["doc_id"]

    code, (printed,) = olv(
        capsys, "iies", "letters", "--date", iso(30), "-o", str(tmp_path / "mail")
    )
    assert code == 0 and printed["letters"] == 1
    with (tmp_path / "mail" / "mailing.csv").open(encoding="utf-8") as handle:
        (mailed,) = list(csv.DictReader(handle))
    assert mailed["doc_id"] == letter_id and mailed["name"] == "JOHN A SMITH"
    assert mailed["address1"] == "1 MAIN ST" and (tmp_path / "mail" / mailed["file"]).is_file()
    code, lines = olv(capsys, "iies", "returns", "--naic", NAIC)
    assert code == 0 and [r["disposition"] for r in lines] == ["H", "H"]
