"""``olv policies import``: CSV and BoB files, bad rows reported and skipped, one transaction."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bob_loader import synth
from olv import db
from olv.bob import layout
from service import policy_import
from service.models import Coverage, Policy
from tests.helpers.memory import peak_bytes
from tests.helpers.olv_cli import run_here

HEADER = (
    "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review\n"
)


def _process(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLV_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "olv", *args], env=env, capture_output=True, text=True, timeout=60
    )


def _run(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    """The command in this process (tests/helpers/olv_cli.py); the first test runs it as a
    process, as an insurer's operator would."""
    return run_here({"OLV_DATABASE_URL": url}, *args)


def _counts(url: str) -> tuple[int, int]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        result = (
            conn.scalar(select(func.count()).select_from(Policy)),
            conn.scalar(select(func.count()).select_from(Coverage)),
        )
    engine.dispose()
    return result  # type: ignore[return-value]


def bob_line(**values: str) -> str:
    line = [" "] * layout.RECORD_LENGTH
    for name, value in values.items():
        field = layout.BY_NAME[name]
        line[field.slice] = list(value.ljust(field.length)[: field.length])
    return "".join(line)


def test_csv_import_reports_bad_rows_with_line_numbers(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        HEADER
        + "12345,AB-1,VS,1HGCM82633A004352,2026-01-01,2027-01-01,,\n"
        + "12345,AB-1,VS,2T1BURHE0JC014706,2026-01-01,2027-01-01,,\n"
        + "1234x,AB-2,VS,1HGCM82633A004352,2026-01-01,,,\n"
        + "12345,AB-3,VS,1HGCM82633A004352,2026-02-30,,,\n"
        + "12345,FLEET,NS,,20260101,,,yes\n"
    )
    result = _process("policies", "import", str(path), url=db_url)
    assert result.returncode == 0, result.stderr
    assert "line 4: naic" in result.stderr and "line 5: effective_date" in result.stderr
    assert "2 rows skipped" in result.stdout
    assert _counts(db_url) == (2, 3)
    # importing again replaces the policies' rows instead of duplicating them
    assert _process("policies", "import", str(path), url=db_url).returncode == 0
    assert _counts(db_url) == (2, 3)


def test_bob_import_and_file_error_changes_nothing(db_url: str, tmp_path: Path) -> None:
    good = tmp_path / "Acme 20261101.txt"
    good.write_text(
        bob_line(
            policy_type="VS",
            naic="12345",
            policy_number="PN 1",
            effective_date="20260101",
            vin="1HGCM82633A004352",
        )
        + "\r\n"
        + bob_line(
            policy_type="VS",
            naic="12345",
            policy_number="PN 2",
            effective_date="20261301",
            vin="1HGCM82633A004353",
        )
        + "\r\n"
    )
    result = _run("policies", "import", str(good), url=db_url)
    assert result.returncode == 0, result.stderr
    assert "line 2" in result.stderr
    assert _counts(db_url) == (1, 1)

    csv_ok = tmp_path / "more.csv"
    csv_ok.write_text(HEADER + "12345,ZZ-9,VS,1HGCM82633A004352,2026-01-01,,,\n")
    empty = tmp_path / "Empty 20261101.txt"
    empty.write_bytes(b"\xff\xfe" + "VS".encode("utf-16-le") * 200)
    failed = _run("policies", "import", str(csv_ok), str(empty), url=db_url)
    assert failed.returncode == 2
    assert "nothing was imported" in failed.stderr
    assert _counts(db_url) == (1, 1)  # the good CSV in the same run was rolled back too
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text(HEADER + "12345,ZZ-8,VS,1HGCM82633A004352,2026-01-01,,,\n", encoding="utf-16")
    refused = _run("policies", "import", str(csv_ok), str(utf16), url=db_url)
    assert refused.returncode == 2 and "UTF-16 text; save the CSV as UTF-8" in refused.stderr
    assert _counts(db_url) == (1, 1)


def test_a_bob_file_with_a_header_record_imports_and_keys_match_without_punctuation(
    db_url: str, tmp_path: Path
) -> None:
    """The header is recognised as BoB and skipped; the stored key is the normalized one, so an
    asked ``ABC123`` finds ``ABC-123`` (SPEC §5 step 5)."""
    path = tmp_path / "Acme 20261101.txt"
    record = bob_line(
        policy_type="VS",
        naic="12345",
        policy_number="ABC-123",
        effective_date="20260101",
        vin="1HGCM82633A004352",
    )
    short = tmp_path / "Short 20261101.txt"  # a header need not be padded to 300
    short.write_text("HD ACME 20261101\r\n" + record)
    path.write_text("HD" + "ACME 20261101".ljust(layout.RECORD_LENGTH - 2) + "\r\n" + record)
    for name in (short, path):
        result = _run("policies", "import", str(name), url=db_url)
        assert result.returncode == 0, result.stderr
        assert "line" not in result.stderr and _counts(db_url) == (1, 1)
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        assert conn.scalar(select(Policy.policy_key)) == "ABC123"
    engine.dispose()


def test_reimport_replaces_vehicles_and_review_flag(db_url: str, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    first.write_text(
        HEADER
        + "12345,AB-1,VS,1HGCM82633A004352,2026-01-01,,,\n"
        + "12345,AB-1,VS,2T1BURHE0JC014706,2026-01-01,,,true\n"
        + "12345,AB-2,VS,5YJSA1E26HF000337,2026-01-01,,,\n"
    )
    second = tmp_path / "second.csv"
    second.write_text(HEADER + "12345,ab 1,NS,,2026-02-01,,,false\n")
    assert _run("policies", "import", str(first), url=db_url).returncode == 0
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        flags = dict(conn.execute(select(Policy.policy_key, Policy.pending_review)).all())
    assert flags == {"AB1": True, "AB2": False}
    assert _run("policies", "import", str(second), url=db_url).returncode == 0
    with engine.connect() as conn:
        policy = conn.execute(select(Policy).where(Policy.policy_key == "AB1")).one()
        vins = (
            conn.execute(select(Coverage.vin).where(Coverage.policy_id == policy.id))
            .scalars()
            .all()
        )
    engine.dispose()
    assert (policy.policy_type, policy.pending_review, policy.policy_number) == (
        "NS",
        False,
        "ab 1",
    )
    assert vins == [None]  # the second file's single fleet row replaced both vehicles
    assert _counts(db_url) == (2, 2)


def test_csv_values_longer_than_the_store_columns_are_reported_and_skipped(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        HEADER
        + f"12345,{'P' * 51},VS,1HGCM82633A004352,2026-01-01,,,\n"
        + f"12345,AB-2,VS,{'1' * 26},2026-01-01,,,\n"
        + "12345,AB-3,VS,1HGCM82633A004352,2026-01-01,,,\n"
        + "१२३४५,AB-4,VS,1HGCM82633A004352,2026-01-01,,,\n"  # Devanagari digits: no NAIC
    )
    result = _run("policies", "import", str(path), url=db_url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "line 2: policy_number" in result.stderr and "longer than 50 characters" in result.stderr
    assert "line 3: vin" in result.stderr and "longer than 25 characters" in result.stderr
    assert "line 5: naic" in result.stderr
    assert "3 rows skipped" in result.stdout
    assert _counts(db_url) == (1, 1)


def test_a_policy_whose_rows_span_chunks_keeps_all_of_them(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy_import, "_BATCH", 2)
    path = tmp_path / "p.csv"
    path.write_text(
        HEADER
        + "12345,AB-1,VS,1HGCM82633A004352,2026-01-01,,,\n"
        + "12345,AB-2,VS,2T1BURHE0JC014706,2026-01-01,,,\n"
        + "12345,AB-1,VS,5YJSA1E26HF000337,2026-01-01,,,yes\n"
        + "12345,AB-3,VS,1FTFW1E50AFA00001,2026-01-01,,,\n"
        + "12345,AB-1,VS,1FTFW1E50AFA00002,2026-01-01,,,\n"
    )
    engine = db.make_engine(db_url)
    try:
        for _ in range(2):  # the second import replaces, never duplicates
            [result] = policy_import.import_files(engine, [path])
            assert (result.rows, result.policies, result.skipped) == (5, 3, 0)
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Policy.policy_key, Policy.pending_review, func.count(Coverage.id))
                    .join(Coverage, Coverage.policy_id == Policy.id)
                    .group_by(Policy.policy_key, Policy.pending_review)
                    .order_by(Policy.policy_key)
                ).all()
            assert [tuple(r) for r in rows] == [
                ("AB1", True, 3),
                ("AB2", False, 1),
                ("AB3", False, 1),
            ]
    finally:
        engine.dispose()


def test_a_csv_line_without_end_is_reported_not_read_whole(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'olv.db'}"
    db.upgrade(url)
    path = tmp_path / "flat.csv"
    size = 12 << 20
    with path.open("wb") as out:
        out.write(HEADER.encode())
        out.write(b"12345,AB-1,VS,1HGCM82633A004352,2026-01-01,,,\n")
        out.write(b"\xff\xfe not utf-8,,,\n")
        out.write(b"12345," + b"9" * size)  # no line break up to the end of the file
    engine = db.make_engine(url)
    results: list[policy_import.ImportResult] = []
    try:
        peak = peak_bytes(lambda: results.extend(policy_import.import_files(engine, [path])))
    finally:
        engine.dispose()
    [result] = results
    assert (result.rows, result.skipped) == (1, 2)
    assert [(i.line, i.reason) for i in result.issues] == [
        (3, "not UTF-8 text"),
        (4, f"longer than {policy_import.MAX_CSV_LINE} characters"),
    ]
    assert peak < size / 4, peak


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'olv.db'}"
    db.upgrade(url)
    peaks = []
    for count in (3_000, 24_000):
        path = tmp_path / f"{count}.txt"
        synth.write_file(path, synth.records("12345", count, series=count % 7))
        engine = db.make_engine(url)
        try:
            peaks.append(peak_bytes(lambda p=path, e=engine: policy_import.import_files(e, [p])))
        finally:
            engine.dispose()
    # Eight times the policies, about the same peak (the old import kept every policy's id).
    assert peaks[1] < peaks[0] * 1.3, peaks


def test_after_an_import_the_soap_reads_touch_indexes_only(db_url: str, tmp_path: Path) -> None:
    """The verification's reads (service.store) are planned on the covering indexes: the
    import leaves statistics on both engines, without which SQLite keeps to the unique key's
    index and reads every policy row from the table too."""
    from service import store

    rows = [f"12345,P-{n},VS,1HGCM82633A{n:06d},2026-01-01,2027-01-01,,\n" for n in range(300)]
    path = tmp_path / "p.csv"
    path.write_text(HEADER + "".join(rows))
    assert _run("policies", "import", str(path), url=db_url).returncode == 0
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            for sql in (store._POLICY_SQL, store._VIN_SQL):
                if db.is_sqlite(db_url):
                    plan = " ".join(
                        row[3]
                        for row in conn.exec_driver_sql(
                            f"EXPLAIN QUERY PLAN {sql}", ("12345", "P1")
                        )
                    )
                    searches = plan.count("SEARCH")
                    assert searches and plan.count("COVERING INDEX") == searches, plan
                else:
                    # A table this small is read whole, whatever the indexes: the test asks
                    # which index a large store's reads would take.
                    conn.exec_driver_sql("SET enable_seqscan = off")
                    pg_sql = sql.replace("?", "%s")
                    plan = " ".join(
                        row[0] for row in conn.exec_driver_sql(f"EXPLAIN {pg_sql}", ("12345", "P1"))
                    )
                    scans = plan.count(" Scan ")
                    assert scans and plan.count("Index Only Scan") == scans, plan
    finally:
        engine.dispose()
