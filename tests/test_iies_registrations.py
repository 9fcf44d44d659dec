"""``olv registrations import`` with registrants (SPEC §6): one import for plate-only and full
files, upserts that never erase columns a file lacks, bad rows skipped by line, a bad file
changing nothing, the portal's plate look-up unchanged, and memory flat in the file's size."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from enforcement.models import Registrant
from enforcement.registrations import (
    MAX_CSV_LINE,
    ImportResult,
    RegistrationFileError,
    import_file,
)
from olv import db
from portal.models import Registration
from portal.state_reads import _PLATE_QUERY
from tests.helpers.iies import VIN_A
from tests.helpers.memory import peak_bytes

FULL = (
    "plate,state,vin,reg_class,entity_type,last_name,first_name,middle_name,dob,dl_number,fein,"
    "zip,address1,address2,city,reg_effective,reg_expires,status\n"
    f"abc 123,ny,{VIN_A},PAS,1,Smith-Jones,Sandra,S,1980-02-03,123456789,,12207,"
    "1 Main St,Apt 2,Albany,2025-03-01,2027-02-28,active\n"
    "ORG1,NY,2T1BURHE8JC014706,COM,2,Fort Orange Power Corp,,,,,987654321,12207-1234,"
    "2 State St,,Albany,,,\n"
)


@pytest.fixture
def engine(db_url: str):
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


def registrants(engine) -> dict[str, Registrant]:
    with db.transaction(engine) as session:
        query = select(Registration.plate, Registrant).join(
            Registrant, Registrant.registration_id == Registration.id
        )
        found = {plate: r for plate, r in session.execute(query)}
        session.expunge_all()
    return found


def test_full_file_then_plate_only_file(engine, tmp_path: Path) -> None:
    path = tmp_path / "full.csv"
    path.write_text(FULL)
    result = import_file(engine, path)
    assert (result.rows, result.skipped) == (2, 0)
    people = registrants(engine)
    smith = people["ABC123"]
    assert (smith.last_name, smith.first_name, smith.entity_type) == ("SMITH-JONES", "SANDRA", 1)
    assert smith.dob.isoformat() == "1980-02-03" and smith.status == "active"
    assert smith.resolve_key == "SMITH|SAN|S|1980-02-03"
    assert people["ORG1"].resolve_key == "FORT|ORA|P|12207"

    plates = tmp_path / "plates.csv"
    plates.write_text(f"plate,state,vin\nABC123,NY,{VIN_A[:-1]}9\nNEW1,NY,X1\n")
    assert import_file(engine, plates).rows == 2
    assert registrants(engine)["ABC123"].last_name == "SMITH-JONES"  # kept
    with db.transaction(engine) as session:
        assert session.execute(_PLATE_QUERY, {"plate": "ABC123"}).all() == [
            (VIN_A[:-1] + "9", "NY")
        ]
        assert session.execute(_PLATE_QUERY, {"plate": "NEW1"}).all() == [("X1", "NY")]

    moved = tmp_path / "moved.csv"
    moved.write_text("plate,state,vin,address1,city\nABC123,NY,X2,9 Elm St,Troy\n")
    import_file(engine, moved)
    smith = registrants(engine)["ABC123"]
    assert (smith.address1, smith.city, smith.last_name) == ("9 ELM ST", "TROY", "SMITH-JONES")


def test_bad_rows_are_skipped_by_line(engine, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "plate,state,vin,entity_type,dob,status,zip\n"
        "A1,NY,V1,3,,,\n"
        "A2,NY,V2,1,1980-02-30,,\n"
        "A3,NY,V3,1,,retired,\n"
        "A4,NY,V4,1,,,12345678901\n"
        "A5,NY,V5,1,,,\n"
    )
    result = import_file(engine, path)
    assert (result.rows, result.skipped) == (1, 4)
    assert [e.split(":")[0] for e in result.errors] == ["line 2", "line 3", "line 4", "line 5"]
    assert set(registrants(engine)) == {"A5"}


@pytest.mark.parametrize(
    "content",
    [
        b"plate,state,vin,shoe_size\nA,NY,V,42\n",
        b"state,plate,vin\nNY,A,V\n",
        b"\x00\x01binary",
        b"plate,state,vin\nA1,NY,V1\n" + b"A2,NY,\xc3\x28\n",
    ],
    ids=["unknown-column", "order", "binary", "bad-utf8-late"],
)
def test_a_bad_file_changes_nothing(engine, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(RegistrationFileError):
        import_file(engine, path)
    with db.transaction(engine) as session:
        assert session.scalars(select(Registration)).all() == []


def test_an_overlong_line_is_skipped_by_line_and_the_file_goes_on(engine, tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_bytes(
        b"plate,state,vin,last_name\n"
        b"A1,NY,V1,ONE\n"
        + b"A2,NY,V2,"
        + b"X" * MAX_CSV_LINE
        + b"\n"
        + b"A3,NY,V3,THREE\n"
        + b"A4,NY,V4,1234567890" * 20
        + b"\n"  # a bad row after it keeps its own number
        + b"A5,NY,V5,FIVE\n"
    )
    result = import_file(engine, path)
    assert (result.rows, result.skipped) == (3, 2)
    assert result.errors[0] == f"line 3: longer than {MAX_CSV_LINE} bytes"
    assert result.errors[1].startswith("line 5: ")
    assert set(registrants(engine)) == {"A1", "A3", "A5"}


def test_a_file_without_line_breaks_is_never_read_whole(engine, tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    with path.open("wb") as out:
        out.write(b"plate,state,vin\nA1,NY,V1\n")
        chunk = b"A" * (1 << 20)
        for _ in range(16):
            out.write(chunk)
    holder: list[ImportResult] = []
    peak = peak_bytes(lambda: holder.append(import_file(engine, path)))
    [result] = holder
    assert peak < 4_000_000, peak  # the file is 16 MB
    assert result.rows == 1
    assert result.errors == [f"line 3: longer than {MAX_CSV_LINE} bytes"]


def _file(path: Path, rows: int) -> Path:
    with path.open("w") as out:
        out.write("plate,state,vin,entity_type,last_name,first_name,dob,zip,address1,city\n")
        for i in range(rows):
            out.write(f"P{i},NY,VIN{i:014d},1,NAME{i},FIRST,1980-01-01,12207,{i} MAIN ST,ALBANY\n")
    return path


def test_memory_does_not_grow_with_the_file(engine, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("enforcement.registrations.BATCH", {"postgresql": 1000, "sqlite": 1000})
    small = _file(tmp_path / "small.csv", 4_000)
    large = _file(tmp_path / "large.csv", 40_000)
    peak_small = peak_bytes(lambda: import_file(engine, small))
    peak_large = peak_bytes(lambda: import_file(engine, large))
    # 10x the rows; a whole-file read would hold ~10x the memory
    assert peak_large < 2 * peak_small + 2_000_000, (peak_small, peak_large)
    assert len(registrants(engine)) == 40_000


def test_a_plate_twice_in_one_file_keeps_its_last_line(engine, tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    path.write_text(
        "plate,state,vin,last_name,first_name,dob\n"
        "AB1,NY,FIRSTVIN,FIRST,ANN,1980-01-01\n"
        "ZZ9,NY,OTHERVIN,OTHER,BOB,1970-01-01\n"
        "AB1,NY,LASTVIN,LAST,CAROL,1990-01-01\n"
    )
    assert import_file(engine, path).rows == 3
    people = registrants(engine)
    assert (people["AB1"].last_name, people["AB1"].first_name) == ("LAST", "CAROL")
    with db.transaction(engine) as session:
        assert session.execute(_PLATE_QUERY, {"plate": "AB1"}).all() == [("LASTVIN", "NY")]


def _count_updates(engine) -> None:
    """Count every row UPDATE of registrations and registrants in table ``updates``."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE updates (n INTEGER)")
        for table in ("registrations", "registrants"):
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    "CREATE OR REPLACE FUNCTION count_update() RETURNS trigger AS "
                    "$$ BEGIN INSERT INTO updates VALUES (1); RETURN NULL; END $$ LANGUAGE plpgsql"
                )
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {table}_updated AFTER UPDATE ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION count_update()"
                )
            else:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {table}_updated AFTER UPDATE ON {table} "
                    "BEGIN INSERT INTO updates VALUES (1); END"
                )


def test_reimporting_an_unchanged_file_rewrites_no_row(engine, tmp_path: Path) -> None:
    path = tmp_path / "full.csv"
    path.write_text(FULL)
    import_file(engine, path)
    _count_updates(engine)
    import_file(engine, path)  # the monthly file again, unchanged
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM updates").scalar() == 0
    changed = tmp_path / "changed.csv"
    changed.write_text(FULL.replace("1 Main St", "5 Main St"))
    import_file(engine, changed)
    with engine.begin() as conn:  # one registrant changed: one row written, nothing else
        assert conn.exec_driver_sql("SELECT count(*) FROM updates").scalar() == 1
    assert registrants(engine)["ABC123"].address1 == "5 MAIN ST"


def test_a_file_name_that_is_not_text_is_imported(engine, tmp_path: Path) -> None:
    """A byte 0xFF in the name: the rows are imported and the security log names the file
    displayably, instead of the import failing to store the name."""
    import os

    from portal.models import SecurityLog

    path = tmp_path / os.fsdecode(b"regs \xff.csv")
    path.write_text(FULL)
    assert import_file(engine, path).rows == 2
    with db.transaction(engine) as session:
        details = session.scalars(select(SecurityLog.detail)).all()
    assert details == ["2 rows from regs ?.csv"]
