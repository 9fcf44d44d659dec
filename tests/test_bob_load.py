"""The load engine (``bob_loader.load``) on SQLite and PostgreSQL: SPEC §2 acceptance rules."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select

from bob_loader import store, synth
from bob_loader.load import load_files
from bob_loader.lookup import find_by_vins, naic_stats
from bob_loader.models import BobFile, BobIssue, BobRecord
from olv import db
from olv.bob import layout


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


def write(path: Path, lines, **kwargs) -> Path:
    synth.write_file(path, lines, **kwargs)
    return path


def stats(engine: Engine) -> dict[str, tuple[int, str]]:
    with engine.connect() as conn:
        return {s["naic"]: (s["records"], s["file"]) for s in naic_stats(conn)}


def current_vins(engine: Engine, naic: str, count: int, series: int) -> int:
    """How many of the VINs of generation ``series`` are current for ``naic``."""
    vins = [synth.make_vin(naic, i, series) for i in range(count)]
    with engine.connect() as conn:
        return sum(1 for hit in find_by_vins(conn, vins) if hit["naic"] == naic)


def rows_of(engine: Engine, naic: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).where(BobRecord.naic == naic))


def bad_dates(lines: list[str], every: int) -> list[str]:
    """Every ``every``-th record gets 31 February as its effective date."""
    eff = layout.BY_NAME["effective_date"].slice
    return [
        r[: eff.start] + "20260231" + r[eff.stop :] if i % every == 0 else r
        for i, r in enumerate(lines)
    ]


def test_clean_file_becomes_the_master(engine: Engine, tmp_path: Path):
    path = write(tmp_path / "Acme 20261101.txt", synth.records("12345", 500))
    [outcome] = load_files(engine, [path])
    assert (outcome.status, outcome.naics, outcome.records) == ("accepted", ["12345"], 500)
    assert (outcome.errors, outcome.warnings, outcome.report_path, outcome.reason) == (
        0,
        0,
        None,
        None,
    )
    assert stats(engine) == {"12345": (500, "Acme 20261101.txt")}
    with engine.connect() as conn:
        [hit] = find_by_vins(conn, [synth.make_vin("12345", 3).lower()])
    assert hit["policy_number"] == "POL-0-000000003" and hit["effective_date"] == "2026-01-04"
    assert hit["expiration_date"] == "2027-01-04" and hit["source_file"] == "Acme 20261101.txt"
    assert hit["loaded_at"].endswith("+00:00")


def test_new_file_replaces_the_whole_master_and_old_rows_are_deleted(engine, tmp_path):
    load_files(engine, [write(tmp_path / "a.txt", synth.records("12345", 300))])
    load_files(engine, [write(tmp_path / "other.txt", synth.records("99999", 10))])
    [outcome] = load_files(
        engine, [write(tmp_path / "b.txt", synth.records("12345", 200, series=1))]
    )
    assert outcome.status == "accepted"
    assert stats(engine) == {"12345": (200, "b.txt"), "99999": (10, "other.txt")}
    assert current_vins(engine, "12345", 300, series=0) == 0
    assert current_vins(engine, "12345", 200, series=1) == 200
    assert rows_of(engine, "12345") == 200  # the superseded generation is gone
    assert rows_of(engine, "99999") == 10  # other NAICs untouched


def test_records_with_errors_below_the_limit_are_reported_and_skipped(engine, tmp_path):
    lines = bad_dates(list(synth.records("12345", 100)), every=50)  # lines 1 and 51
    lines[9] = lines[9][:45] + "1HGCM82643A004352".ljust(25) + lines[9][70:]  # bad check digit
    [outcome] = load_files(engine, [write(tmp_path / "x.txt", lines)], report_dir=tmp_path / "r")
    assert (outcome.status, outcome.records, outcome.errors, outcome.warnings) == (
        "accepted",
        98,
        2,
        1,
    )
    assert outcome.report_path == tmp_path / "r" / "x.txt.errors.txt"
    report = outcome.report_path.read_text()
    header, body = report.split("\n\n")
    assert "status: accepted" in header and "records: 101" not in header
    assert "records: 100" in header and "loaded: 98" in header and "errors: 2" in header
    assert body.splitlines() == [
        "line 1: effective date: '20260231': mandatory, must be a real date YYYYMMDD",
        "line 10: VIN: '1HGCM82643A004352': warning: check digit does not match",
        "line 51: effective date: '20260231': mandatory, must be a real date YYYYMMDD",
    ]
    with engine.connect() as conn:
        issues = conn.execute(select(BobIssue.line, BobIssue.severity).order_by("line")).all()
    assert issues == [(1, "error"), (10, "warning"), (51, "error")]
    assert stats(engine) == {"12345": (98, "x.txt")}


def test_half_bad_dates_rejects_the_file_and_keeps_the_previous_master(engine, tmp_path):
    load_files(engine, [write(tmp_path / "old.txt", synth.records("12345", 40))])
    bad = write(tmp_path / "new.txt", bad_dates(list(synth.records("12345", 40, series=1)), 2))
    [outcome] = load_files(engine, [bad])
    assert outcome.status == "rejected" and outcome.records == 0 and outcome.errors == 20
    assert "error rate 50.00 % (20 of 40 records) is above the limit of 5.00 %" in outcome.reason
    assert outcome.report_path == tmp_path / "new.txt.errors.txt"
    assert "status: rejected" in outcome.report_path.read_text()
    assert stats(engine) == {"12345": (40, "old.txt")}
    assert current_vins(engine, "12345", 40, series=0) == 40
    assert rows_of(engine, "12345") == 40  # nothing of the rejected file stays behind
    # The threshold is configurable, per call or through OLV_BOB_MAX_ERROR_RATE.
    [again] = load_files(engine, [bad], max_error_rate=0.5)
    assert again.status == "accepted" and again.records == 20


def test_error_rate_from_the_environment(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("OLV_BOB_MAX_ERROR_RATE", "0.01")
    path = write(tmp_path / "x.txt", bad_dates(list(synth.records("12345", 50)), 25))  # 4 %
    assert load_files(engine, [path])[0].status == "rejected"


def test_trailer_mismatch_rejects_and_keeps_the_previous_master(engine, tmp_path):
    load_files(engine, [write(tmp_path / "old.txt", synth.records("12345", 30))])
    path = write(tmp_path / "new.txt", synth.records("12345", 30, series=1), trailer_count=31)
    [outcome] = load_files(engine, [path])
    assert outcome.status == "rejected"
    assert outcome.reason == "trailer mismatch: trailer says 31 records, file has 30"
    assert stats(engine) == {"12345": (30, "old.txt")}
    assert current_vins(engine, "12345", 30, series=0) == 30 and rows_of(engine, "12345") == 30
    with engine.connect() as conn:
        row = conn.execute(select(BobFile.status, BobFile.reason).where(BobFile.name == "new.txt"))
        assert row.one() == ("rejected", outcome.reason)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file: no records"),
        ("VS12345 some text".encode("utf-16"), "not a text file: UTF-16 byte-order mark"),
        (bytes(range(256)) * 100, "not a text file: NUL bytes"),
        (b"\x1b\x02\x03\x04\x05" * 100 + b"\n", "not a text file: binary data"),
    ],
)
def test_hostile_files_are_rejected_whole(engine, tmp_path, data: bytes, reason: str):
    load_files(engine, [write(tmp_path / "old.txt", synth.records("12345", 5))])
    path = tmp_path / "hostile.txt"
    path.write_bytes(data)
    [outcome] = load_files(engine, [path])
    assert (outcome.status, outcome.reason) == ("rejected", reason)
    assert f"reason: {reason}" in outcome.report_path.read_text()
    assert stats(engine) == {"12345": (5, "old.txt")}


def test_wrong_record_lengths_are_reported_per_line(engine, tmp_path):
    path = tmp_path / "short.txt"
    path.write_bytes(b"".join(r[:299].encode() + b"\r\n" for r in synth.records("12345", 4)))
    [outcome] = load_files(engine, [path])
    assert outcome.status == "rejected" and outcome.errors == 4
    body = outcome.report_path.read_text().split("\n\n")[1].splitlines()
    assert body[0].startswith("line 1: record: 'VS12345") and body[0].endswith(
        "length 299, expected 300"
    )
    assert [b.split(":")[0] for b in body] == ["line 1", "line 2", "line 3", "line 4"]


def test_the_same_file_twice_is_a_duplicate_and_not_reloaded(engine, tmp_path):
    path = write(tmp_path / "a.txt", synth.records("12345", 50))
    first = load_files(engine, [path])[0]
    copy = tmp_path / "a copy.txt"
    copy.write_bytes(path.read_bytes())
    again, renamed = load_files(engine, [path, copy])
    assert first.status == "accepted"
    assert (again.status, again.records, again.naics) == ("duplicate", 0, ["12345"])
    assert again.reason.startswith("already loaded as a.txt (file id ")
    assert renamed.status == "duplicate"
    assert rows_of(engine, "12345") == 50
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(BobFile)) == 1


def test_conflict_rule_rejects_the_later_file_of_a_run(engine, tmp_path):
    first = write(tmp_path / "first.txt", synth.records("12345", 20))
    mixed = list(synth.records("55555", 5)) + list(synth.records("12345", 5, series=1))
    second = write(tmp_path / "second.txt", mixed)
    third = write(tmp_path / "third.txt", synth.records("77777", 5))
    outcomes = load_files(engine, [first, second, third])
    assert [o.status for o in outcomes] == ["accepted", "rejected", "accepted"]
    reason = outcomes[1].reason
    assert "conflict: NAIC 12345 is also carried by first.txt" in reason
    assert reason in outcomes[1].report_path.read_text()
    assert stats(engine) == {"12345": (20, "first.txt"), "77777": (5, "third.txt")}
    # In a later run the second file is welcome: it becomes the master of both its NAICs.
    [later] = load_files(engine, [second])
    assert (later.status, later.naics) == ("accepted", ["12345", "55555"])


def test_a_load_killed_midway_blocks_nothing(engine, tmp_path, monkeypatch):
    load_files(engine, [write(tmp_path / "old.txt", synth.records("12345", 10))])
    path = write(tmp_path / "new.txt", synth.records("12345", 30, series=1))

    def die(*_args: object) -> None:
        raise KeyboardInterrupt  # as if the process were stopped inside the swap

    monkeypatch.setattr(store, "swap", die)
    with pytest.raises(KeyboardInterrupt):
        load_files(engine, [path])
    with engine.connect() as conn:
        assert conn.scalar(select(BobFile.status).where(BobFile.name == "new.txt")) == "loading"
    assert stats(engine) == {"12345": (10, "old.txt")} and rows_of(engine, "12345") == 10
    monkeypatch.undo()
    [rerun] = load_files(engine, [path])
    assert rerun.status == "accepted" and stats(engine) == {"12345": (30, "new.txt")}


def test_rejected_file_delivered_again_is_validated_again(engine, tmp_path):
    path = write(tmp_path / "x.txt", bad_dates(list(synth.records("12345", 10)), 5))
    assert load_files(engine, [path])[0].status == "rejected"
    assert load_files(engine, [path])[0].status == "rejected"
    assert load_files(engine, [path], max_error_rate=0.25)[0].status == "accepted"


def test_leftover_rows_of_an_interrupted_cleanup_are_invisible_then_removed(engine, tmp_path):
    load_files(engine, [write(tmp_path / "a.txt", synth.records("12345", 10))])
    vin = synth.make_vin("12345", 0, series=7)
    with engine.begin() as conn:  # rows of a superseded generation whose deletion was killed
        conn.execute(
            insert(BobRecord).values(
                file_id=999,
                line=1,
                naic="12345",
                policy_type="VS",
                policy_number="OLD",
                policy_key="OLD",
                vin=vin,
                effective_date=date(2020, 1, 1),
                commercial=False,
            )
        )
    with engine.connect() as conn:
        assert list(find_by_vins(conn, [vin])) == []
    load_files(engine, [write(tmp_path / "b.txt", synth.records("12345", 10, series=1))])
    assert rows_of(engine, "12345") == 10


def test_stored_issues_are_capped_but_the_report_is_complete(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("OLV_BOB_MAX_STORED_ISSUES", "3")
    path = write(tmp_path / "x.txt", bad_dates(list(synth.records("12345", 10)), 2))
    [outcome] = load_files(engine, [path])
    assert outcome.errors == 5
    assert len(outcome.report_path.read_text().split("\n\n")[1].splitlines()) == 5
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(BobIssue)) == 3


def test_multi_naic_file_and_full_profile(engine, tmp_path):
    lines = list(synth.records("11111", 5)) + list(synth.records("22222", 7))
    path = write(tmp_path / "multi.txt", lines)
    [outcome] = load_files(engine, [path], profile="full")
    assert (outcome.status, outcome.naics, outcome.records) == ("accepted", ["11111", "22222"], 12)
    assert stats(engine) == {"11111": (5, "multi.txt"), "22222": (7, "multi.txt")}
    with engine.connect() as conn:  # the file row records what happened
        row = conn.execute(select(BobFile).where(BobFile.name == "multi.txt")).one()
    assert (row.status, row.naics, row.records, row.loaded) == ("accepted", "11111,22222", 12, 12)


def test_unreadable_path_is_rejected_with_a_report(engine, tmp_path):
    [outcome] = load_files(engine, [tmp_path / "missing.txt"], report_dir=tmp_path / "r")
    assert outcome.status == "rejected" and outcome.reason.startswith("cannot read the file")
    assert outcome.report_path.exists()


def test_unknown_profile_is_refused_before_anything_is_registered(engine, tmp_path):
    path = write(tmp_path / "x.txt", synth.records("12345", 3))
    with pytest.raises(ValueError, match="unknown validation profile 'strict'"):
        load_files(engine, [path], profile="strict")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(BobFile)) == 0


def test_a_report_the_disk_cannot_take_fails_the_load_before_its_commit(engine, tmp_path):
    """The report of an accepted file with problems is written before the swap commits: a
    full disk then fails the load with the old master in place, instead of a committed load
    whose report is lost and whose caller is told it failed."""
    load_files(engine, [write(tmp_path / "a.txt", synth.records("12345", 100))])
    lines = bad_dates(list(synth.records("12345", 100, series=1)), every=50)
    path = write(tmp_path / "b.txt", lines)
    reports = tmp_path / "r"
    reports.mkdir()
    # The report's temporary name leads to /dev/full: each write there fails with ENOSPC.
    (reports / ".b.txt.errors.txt.tmp").symlink_to("/dev/full")
    with pytest.raises(OSError) as failed:
        load_files(engine, [path], report_dir=reports)
    assert failed.value.errno == errno.ENOSPC
    assert stats(engine) == {"12345": (100, "a.txt")}
    assert current_vins(engine, "12345", 100, series=1) == 0
    assert sorted(p.name for p in reports.iterdir()) == []  # nothing half-written is left

    [outcome] = load_files(engine, [path], report_dir=reports)  # the disk has room again
    assert (outcome.status, outcome.records, outcome.errors) == ("accepted", 98, 2)
    assert outcome.report_path == reports / "b.txt.errors.txt"
    assert "line 51" in outcome.report_path.read_text()
    assert stats(engine) == {"12345": (98, "b.txt")}
