"""Insurer transactions through ``olv iies load`` and ``olv iies returns`` (SPEC §6) on SQLite
and PostgreSQL: matching exactly H1-H4 and R, U and its daily re-matching, the sequence rules,
and hostile files that are refused whole with a clear acknowledgement."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from enforcement.load import Ack, load
from enforcement.models import IiesFile, IiesTransaction
from enforcement.registrations import import_file
from enforcement.returns import rematch, write_outbox
from olv import db
from olv.cli import run
from olv.vin import with_check_digit
from tests.helpers.iies import (
    NAIC,
    OTHER_NAIC,
    REGISTRATION_HEADER,
    VIN_A,
    csv_text,
    row,
    write_csv,
)

VIN_ORG = with_check_digit("2T1BURHE0JC014706")
VIN_LIKE_A = with_check_digit(VIN_A[:12] + "9" + VIN_A[13:])  # 2 positions differ: 88 %
VIN_NEW = with_check_digit("5YJSA1E26HF000337")
REGISTRATIONS = [
    f"ABC123,NY,{VIN_A},1,SMITH,JOHN,A,1980-02-03,123456789,,12207,1 MAIN ST,ALBANY,active",
    f"ORG1,NY,{VIN_ORG},2,FORT ORANGE POWER CORP,,,,,987654321,12207,2 STATE ST,ALBANY,active",
]


@pytest.fixture
def engine(db_url: str, tmp_path: Path):
    engine = db.make_engine(db_url)
    path = tmp_path / "registrations.csv"
    path.write_text(REGISTRATION_HEADER + "\n" + "\n".join(REGISTRATIONS) + "\n")
    import_file(engine, path)
    yield engine
    engine.dispose()


def send(engine, rows: list[dict[str, str]], naic: str | None = NAIC, name: str = "t.csv"):
    return load(engine, csv_text(rows).encode(), name=name, channel="cli", sender_naic=naic)


def stored(engine) -> dict[str, IiesTransaction]:
    with db.transaction(engine) as session:
        found = {t.txn_id: t for t in session.scalars(select(IiesTransaction))}
        session.expunge_all()
    return found


def count(engine, model) -> int:
    with db.transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(model))


# --- matching ------------------------------------------------------------------------------------


def test_each_direct_hit_criterion_in_order(engine) -> None:
    ack = send(
        engine,
        [
            row(txn_id="H1", plate="ABC-123", last_name="ZZZ", dob="1970-01-01"),
            row(txn_id="H2", dl_number="123456789", last_name="ZZZ", dob="1970-01-01"),
            row(txn_id="H3", last_name="SMITHERS", dob="1980-02-03"),
            row(txn_id="H4", last_name="SMIRNOFF", dob="1970-01-01"),
            row(
                txn_id="H2ORG",
                vin=VIN_ORG,
                entity_type="2",
                last_name="ZZZ ORG",
                first_name="",
                dob="",
                fein="987654321",
            ),
            row(txn_id="H4ORG", vin=VIN_ORG, entity_type="2", last_name="FORT ORANGE", dob=""),
            row(txn_id="NONE", last_name="JONES", dl_number="000000000"),
        ],
    )
    assert ack.accepted and ack.counts == {"H": 6, "R": 0, "E": 0, "U": 1}
    got = {k: (t.disposition, t.match_rule) for k, t in stored(engine).items()}
    assert got == {
        "H1": ("H", "H1"),
        "H2": ("H", "H2"),
        "H3": ("H", "H3"),
        "H4": ("H", "H4"),
        "H2ORG": ("H", "H2"),
        "H4ORG": ("H", "H4"),
        "NONE": ("U", None),
    }


def test_exception_resolution_needs_the_name_key_and_a_vin_70_percent_alike(engine) -> None:
    far = with_check_digit("9ZZZZ99ZZ9Z99Z999")
    ack = send(
        engine,
        [
            row(txn_id="R", vin=VIN_LIKE_A),  # SMITH JOHN A, same DOB
            row(txn_id="R-DOB", vin=VIN_LIKE_A, dob="1981-02-03"),
            row(txn_id="R-FAR", vin=far),
            row(
                txn_id="R-ORG",
                vin=with_check_digit(VIN_ORG[:14] + "999"),
                entity_type="2",
                last_name="FORT ORANGE POWER CORP",
                first_name="",
                dob="",
            ),
        ],
    )
    assert ack.accepted
    got = {k: t.disposition for k, t in stored(engine).items()}
    assert got == {"R": "R", "R-DOB": "U", "R-FAR": "U", "R-ORG": "R"}


def test_an_unmatched_nbs_is_rematched_daily_then_final(engine, tmp_path: Path) -> None:
    now = datetime(2026, 12, 3, 12, tzinfo=UTC)
    rows = [
        row(txn_id="N1", vin=VIN_NEW),
        row(txn_id="N2", vin=with_check_digit("3VWFE21C04M000001")),
    ]
    rows.append(row(txn_id="X1", type="XLC", vin=VIN_NEW))
    load(engine, csv_text(rows).encode(), name="t", channel="cli", sender_naic=NAIC, now=now)
    before = stored(engine)
    assert before["N1"].rematch_until == date(2027, 1, 17)
    assert before["X1"].disposition == "U" and before["X1"].rematch_until is None
    path = tmp_path / "new.csv"
    path.write_text(f"{REGISTRATION_HEADER}\nNEW1,NY,{VIN_NEW},1,SMITH,JOHN,A,,,,,,,\n")
    import_file(engine, path)
    assert rematch(engine, date(2026, 12, 4)) == {
        "tried": 2,
        "matched": 1,
        "resolved": 0,
        "final": 0,
    }
    after = stored(engine)
    assert (after["N1"].disposition, after["N1"].match_rule) == ("H", "H4")
    assert after["N2"].disposition == "U" and after["N2"].rematch_until is not None
    assert rematch(engine, date(2027, 1, 18))["final"] == 1
    assert stored(engine)["N2"].rematch_until is None
    assert rematch(engine, date(2027, 1, 18))["final"] == 0  # a rerun changes nothing


# --- sequence rules ------------------------------------------------------------------------------


def test_flat_cancel_is_refused_also_across_files(engine) -> None:
    send(engine, [row(txn_id="NBS1", plate="ABC123")], name="a")
    ack = send(engine, [row(txn_id="XLC1", type="XLC", plate="ABC123")], name="b")
    assert ack.counts["E"] == 1 and stored(engine)["XLC1"].codes == "E60"


def test_second_cancellation_needs_a_filing_between(engine) -> None:
    xlc = {"type": "XLC", "plate": "ABC123"}
    send(
        engine,
        [
            row(txn_id="N", plate="ABC123", effective_date="2026-10-01"),
            row(txn_id="X1", effective_date="2026-11-01", **xlc),
            row(txn_id="X2", effective_date="2026-11-05", **xlc),
            row(txn_id="C1", type="REC", plate="ABC123", effective_date="2026-11-01"),
            row(txn_id="X3", effective_date="2026-11-05", **xlc),
            row(txn_id="O1", naic=OTHER_NAIC, effective_date="2026-11-06", **xlc),
        ],
    )
    got = {k: (t.disposition, t.codes) for k, t in stored(engine).items()}
    assert got["X1"] == ("H", "") and got["X2"] == ("E", "E61")
    assert got["C1"] == ("H", "") and got["X3"] == ("H", "")
    assert got["O1"] == ("E", "E04")  # another insurer's NAIC in this insurer's file


def test_rescissions_must_match_a_standing_filing(engine) -> None:
    send(
        engine,
        [
            row(txn_id="N", plate="ABC123"),
            row(txn_id="P-WRONG-DATE", type="REP", plate="ABC123", effective_date="2026-10-01"),
            row(txn_id="P", type="REP", plate="ABC123"),
            row(txn_id="P-AGAIN", type="REP", plate="ABC123"),
            row(txn_id="C", type="REC", plate="ABC123"),
            row(txn_id="P-NOREG", type="REP", vin=VIN_NEW),
        ],
    )
    got = {k: (t.disposition, t.codes) for k, t in stored(engine).items()}
    assert got["P-WRONG-DATE"] == ("E", "E62") and got["P"] == ("H", "")
    assert got["P-AGAIN"] == ("E", "E62") and got["C"] == ("E", "E63")
    assert got["P-NOREG"] == ("E", "E62")


def test_another_insurers_history_does_not_count(engine) -> None:
    send(engine, [row(txn_id="N", plate="ABC123")])
    ack = send(
        engine, [row(txn_id="X", naic=OTHER_NAIC, type="XLC", plate="ABC123")], naic=OTHER_NAIC
    )
    assert ack.counts == {"H": 1, "R": 0, "E": 0, "U": 0}


# --- hostile files -------------------------------------------------------------------------------

HEADER_LINE = csv_text([]).strip()
GOOD_LINE = csv_text([row()]).splitlines()[1]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"plate,state,vin\nABC,NY,X\n", "F02"),
        (b"\x00\x01\x02binary" * 100, "F01"),
        (b"\xff\xfe" + HEADER_LINE.encode("utf-16-le"), "F01"),
        (f"{HEADER_LINE}\n{GOOD_LINE}\n".encode() + b"\xc3\x28,bad\n", "F01"),
        (f"{HEADER_LINE}\n{'X' * 10_000}\n".encode(), "F03"),
        (f"{HEADER_LINE}\nT1,NBS,{NAIC}\n".encode(), "F04"),
        (f"{HEADER_LINE}\n".encode(), "F05"),
        (b"", "F05"),
        (f"{HEADER_LINE}\n{GOOD_LINE}\n{GOOD_LINE}\n".encode(), "F07"),
    ],
    ids=[
        "header",
        "binary",
        "utf16",
        "bad-utf8-late",
        "huge-line",
        "fields",
        "empty",
        "zero",
        "dup",
    ],
)
def test_a_hostile_file_is_refused_whole_and_keeps_nothing(
    engine, content: bytes, code: str
) -> None:
    ack = load(engine, content, name="bad.csv", channel="cli", sender_naic=NAIC)
    assert (ack.status, ack.error_code) == ("rejected", code) and ack.error
    assert count(engine, IiesTransaction) == 0
    assert send(engine, [row(txn_id="AFTER")]).accepted  # the intake goes on


def test_too_many_rows_and_replayed_txn_ids_are_refused(engine, monkeypatch) -> None:
    monkeypatch.setenv("OLV_IIES_MAX_ROWS", "2")
    monkeypatch.setenv("OLV_IIES_BATCH_SIZE", "1")  # the refusal comes after batches were written
    ack = send(engine, [row(txn_id=f"T{i}") for i in range(3)])
    assert ack.error_code == "F06" and count(engine, IiesTransaction) == 0
    assert send(engine, [row(txn_id="A")], name="one").accepted
    ack = send(engine, [row(txn_id="B"), row(txn_id="A", effective_date="2026-11-02")], name="two")
    assert ack.error_code == "F08" and count(engine, IiesTransaction) == 1


def test_the_same_bytes_again_get_the_first_acknowledgement(engine) -> None:
    first = send(engine, [row(txn_id="A")])
    again = send(engine, [row(txn_id="A")])
    assert again.ack_id == first.ack_id and count(engine, IiesTransaction) == 1


def test_the_same_bytes_twice_at_once_get_one_acknowledgement(engine) -> None:
    """Two deliveries of one file at the same moment (a retried upload, two channels): both
    pass the check for an earlier delivery before either commits; the one that waits for the
    other's lock then answers with the other's acknowledgement, not F08 for its own txn_ids."""
    content = csv_text([row(txn_id=f"T{i}") for i in range(400)]).encode()
    start = threading.Barrier(2)

    def deliver() -> Ack:
        start.wait()
        return load(engine, content, name="t.csv", channel="cli", sender_naic=NAIC)

    with ThreadPoolExecutor(2) as pool:
        acks = list(pool.map(lambda _: deliver(), range(2)))
    assert [a.status for a in acks] == ["accepted", "accepted"], [a.error for a in acks]
    assert acks[0].ack_id == acks[1].ack_id
    assert count(engine, IiesTransaction) == 400
    assert count(engine, IiesFile) == 1


# --- the command contract ------------------------------------------------------------------------


def test_cli_load_and_returns(engine, tmp_path: Path, capsys) -> None:
    path = write_csv(
        tmp_path / "day.csv",
        [row(txn_id="A", plate="ABC123"), row(txn_id="B", effective_date="1900-01-01")],
    )
    assert run(["iies", "load", str(path)]) == 0
    ack = json.loads(capsys.readouterr().out)
    assert ack["status"] == "accepted" and ack["naic"] == NAIC and ack["counts"]["E"] == 1
    assert run(["iies", "returns", "--naic", NAIC]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"txn_id": "A", "disposition": "H", "codes": ["H1"], "plate": "ABC123"},
        {"txn_id": "B", "disposition": "E", "codes": ["E22"], "plate": None},
    ]
    assert run(["iies", "returns", "--naic", NAIC, "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == ""
    assert run(["iies", "returns", "--naic", OTHER_NAIC]) == 0
    assert capsys.readouterr().out == ""

    bad = tmp_path / "bad.csv"
    bad.write_text("nonsense\n")
    assert run(["iies", "load", str(bad)]) == 1
    assert json.loads(capsys.readouterr().out)["error_code"] == "F02"
    assert run(["iies", "load", str(tmp_path / "missing.csv")]) == 2
    assert run(["iies", "load", str(path), "--naic", "12"]) == 2
    assert run(["iies", "returns", "--naic", NAIC, "--since", "yesterday"]) == 2
    assert count(engine, IiesFile) == 2


def test_outbox_sends_each_disposition_once(engine, tmp_path: Path) -> None:
    send(engine, [row(txn_id="A", plate="ABC123"), row(txn_id="B", vin=VIN_NEW)])
    first = write_outbox(engine, NAIC, tmp_path)
    assert first is not None and first.name.startswith(f"IIES-RETURNS {NAIC} ")
    body = first.read_text().splitlines()
    assert body[0].startswith("txn_id,disposition,codes,plate") and len(body) == 3
    assert write_outbox(engine, NAIC, tmp_path) is None


def test_cli_outbox_writes_what_was_not_returned(engine, tmp_path: Path, capsys) -> None:
    send(engine, [row(txn_id="A", plate="ABC123")])
    assert run(["iies", "returns", "--naic", NAIC, "--outbox", str(tmp_path)]) == 0
    written = json.loads(capsys.readouterr().out)["outbox"]
    assert Path(written).read_text().splitlines()[1].startswith("A,H,H1,ABC123,NBS,")
    assert run(["iies", "returns", "--naic", NAIC, "--outbox", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"outbox": None}
    assert run(["iies", "returns", "--naic", NAIC, "--outbox", str(tmp_path / "no")]) == 2


def test_without_a_sender_the_first_rows_naic_names_it(engine) -> None:
    ack = send(engine, [row(txn_id="A"), row(txn_id="B", naic=OTHER_NAIC)], naic=None)
    assert ack.accepted and ack.naic == NAIC and ack.counts["E"] == 1
    ack = send(engine, [row(txn_id="C", naic="ABCDE")], naic=None, name="nonaic.csv")
    assert (ack.status, ack.error_code) == ("rejected", "F09")


def test_a_file_name_that_is_not_text_is_stored_displayable(engine, tmp_path: Path, capsys):
    """A byte 0xFF in the name (an old client, a Samba share): loaded, under the displayable
    name the intake gives such a file, instead of failing to store the name."""
    import os

    path = write_csv(tmp_path / os.fsdecode(b"IIES 12345 20261201 \xff.csv"), [row(txn_id="A")])
    assert run(["iies", "load", str(path), "--naic", NAIC]) == 0
    ack = json.loads(capsys.readouterr().out)
    assert (ack["status"], ack["file"]) == ("accepted", "IIES 12345 20261201 ?.csv")
    with db.transaction(engine) as session:
        assert session.scalars(select(IiesFile.name)).all() == ["IIES 12345 20261201 ?.csv"]
