"""An upload written in place that stalls mid-record is not taken as complete (SPEC §2 "Intake").

A BoB file has no required trailer, so a half-written one would load as a smaller book with a
single bad last record and replace the NAIC's whole master. The watcher holds back a BoB upload
whose last line is cut short until the rest arrives, or until it has stayed that way for
``OLV_INTAKE_PARTIAL_SECONDS``; complete files (line end, or a full last record) are taken at
once, and IIES transaction files (CSV, where a missing final newline is legal) are not held.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bob_loader import intake_claims
from bob_loader.intake import Intake
from bob_loader.intake_claims import StabilityTracker
from bob_loader.intake_settings import IntakeSettings
from bob_loader.load import load_files
from bob_loader.models import BobCurrent, BobFile
from enforcement.intake import IiesIntake
from enforcement.models import IiesTransaction
from olv import db
from olv.logging import JsonFormatter
from tests.helpers.bob_intake_data import record, write_bob
from tests.helpers.iies import csv_text, row

NAIC = "12345"
RECORDS = 100  # one cut record in 61 stays below the 5 % error rate: the cut file would load
STABLE = 5.0  # the default OLV_INTAKE_STABLE_SECONDS


def _account(base: Path, name: str = "acme") -> Path:
    inbox = base / name / "inbox"
    inbox.mkdir(parents=True)
    return inbox


def _intake(engine: Engine, base: Path, stability: StabilityTracker) -> Intake:
    return Intake(
        base=base,
        engine=engine,
        loader=load_files,
        stability=stability,
        contacts=lambda naics: [],
        handlers=[IiesIntake()],
    )


def _book(tmp_path: Path, first: int) -> bytes:
    """A whole book of ``RECORDS`` records, CRLF after each, written outside the inbox."""
    return write_bob(tmp_path / f"book-{first}.txt", NAIC, RECORDS, first=first).read_bytes()


def _write_in_place(path: Path, content: bytes, *, age: float, append: bool = False) -> None:
    """Bytes written straight into the inbox, the last of them ``age`` seconds ago."""
    with path.open("ab" if append else "wb") as out:
        out.write(content)
    then = time.time() - age
    os.utime(path, (then, then))


def _visible(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def _master(engine: Engine) -> tuple[str, int]:
    """The file that is the NAIC's master, and its record count."""
    with db.transaction(engine) as session:
        name, records = session.execute(
            select(BobFile.name, BobCurrent.records)
            .join(BobCurrent, BobCurrent.file_id == BobFile.id)
            .where(BobCurrent.naic == NAIC)
        ).one()
    return name, records


def _files(engine: Engine) -> list[tuple[str, str, int, int]]:
    with db.transaction(engine) as session:
        return [
            (f.name, f.status, f.records, f.errors)
            for f in session.scalars(select(BobFile).order_by(BobFile.id))
        ]


def test_an_upload_stalled_mid_record_waits_for_the_rest(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = db.make_engine(db_url)
    try:
        inbox = _account(tmp_path / "intake")
        watcher = _intake(engine, tmp_path / "intake", StabilityTracker(STABLE))
        _write_in_place(inbox / "Acme 20250101.txt", _book(tmp_path, 0), age=3600)
        assert watcher.run_round() == 1
        assert _master(engine) == ("Acme 20250101.txt", RECORDS)

        # The SFTP client stalls 60.5 records into the next month's book, for longer than the
        # stable seconds but well within the grace.
        book = _book(tmp_path, 1000)
        cut = 60 * 302 + 150
        upload = inbox / "Acme 20250201.txt"
        _write_in_place(upload, book[:cut], age=3 * STABLE)
        with caplog.at_level(logging.INFO, logger="bob_loader.intake"):
            assert watcher.run_round() == 0
            assert watcher.run_round() == 0  # still held, and not logged again

        assert _visible(inbox) == ["Acme 20250201.txt"]
        assert _files(engine) == [("Acme 20250101.txt", "accepted", RECORDS, 0)]
        assert _master(engine) == ("Acme 20250101.txt", RECORDS)
        assert _visible(tmp_path / "intake" / "acme" / "outbox") == []
        [held] = [r for r in caplog.records if r.getMessage().startswith("upload held back")]
        assert held.levelno == logging.INFO
        line = json.loads(JsonFormatter().format(held))
        assert line["account"] == "acme" and line["file"] == "Acme 20250201.txt"
        assert "line end" in line["reason"]
        assert line["grace_seconds"] == IntakeSettings().intake_partial_seconds
        assert NAIC not in JsonFormatter().format(held)  # nothing of the records is logged

        _write_in_place(upload, book[cut:], age=3 * STABLE, append=True)
        assert watcher.run_round() == 1

        assert _visible(inbox) == []
        assert _files(engine) == [
            ("Acme 20250101.txt", "accepted", RECORDS, 0),
            ("Acme 20250201.txt", "accepted", RECORDS, 0),
        ]
        assert _master(engine) == ("Acme 20250201.txt", RECORDS)
    finally:
        engine.dispose()


def test_an_upload_left_mid_record_past_the_grace_is_processed_as_before(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    try:
        inbox = _account(tmp_path / "intake")
        stability = StabilityTracker(0.01, partial_seconds=0.5)
        watcher = _intake(engine, tmp_path / "intake", stability)
        _write_in_place(inbox / "Acme 20250101.txt", _book(tmp_path, 0)[: 60 * 302 + 150], age=0)
        assert watcher.run_round() == 0

        time.sleep(0.6)  # unchanged past the grace: the file really ends there
        assert watcher.run_round() == 1

        assert _visible(inbox) == []
        assert _files(engine) == [("Acme 20250101.txt", "accepted", 61, 1)]
        assert _master(engine) == ("Acme 20250101.txt", 60)
        [report] = _visible(tmp_path / "intake" / "acme" / "outbox")
        assert "line 61" in (tmp_path / "intake" / "acme" / "outbox" / report).read_text()
    finally:
        engine.dispose()


def test_a_full_last_record_without_a_line_end_is_complete_at_once(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    try:
        inbox = _account(tmp_path / "intake")
        watcher = _intake(engine, tmp_path / "intake", StabilityTracker(STABLE))
        book = _book(tmp_path, 0)
        assert book.endswith(b"\r\n")
        _write_in_place(inbox / "Acme 20250101.txt", book[:-2], age=3 * STABLE)

        assert watcher.run_round() == 1

        assert _files(engine) == [("Acme 20250101.txt", "accepted", RECORDS, 0)]
        assert _master(engine) == ("Acme 20250101.txt", RECORDS)
    finally:
        engine.dispose()


def test_a_file_ending_with_a_line_end_is_complete(db_url: str, tmp_path: Path) -> None:
    """CRLF (and a bare LF) ends the last record, whatever the length of that last line."""
    engine = db.make_engine(db_url)
    try:
        base = tmp_path / "intake"
        acme, beta = _account(base, "acme"), _account(base, "beta")
        watcher = _intake(engine, base, StabilityTracker(STABLE))
        _write_in_place(acme / "Acme 20250101.txt", _book(tmp_path, 0), age=3 * STABLE)
        lf_only = "".join(record("22222", 5000 + i) + "\n" for i in range(RECORDS)).encode()
        _write_in_place(beta / "Beta 20250101.txt", lf_only, age=3 * STABLE)

        assert watcher.run_round() == 2

        assert sorted(_files(engine)) == [
            ("Acme 20250101.txt", "accepted", RECORDS, 0),
            ("Beta 20250101.txt", "accepted", RECORDS, 0),
        ]
    finally:
        engine.dispose()


def test_an_iies_csv_without_a_final_line_end_is_not_held(db_url: str, tmp_path: Path) -> None:
    """A CSV legally ends without a newline, and its last row is no 300-character record."""
    engine = db.make_engine(db_url)
    try:
        inbox = _account(tmp_path / "intake")
        watcher = _intake(engine, tmp_path / "intake", StabilityTracker(STABLE))
        text = csv_text([row(txn_id="A1"), row(txn_id="A2")])
        assert text.endswith("\n")
        _write_in_place(inbox / f"IIES {NAIC} 20261203.csv", text[:-1].encode(), age=3 * STABLE)

        assert watcher.run_round() == 1

        [ack] = (tmp_path / "intake" / "acme" / "outbox").glob("*.ack.json")
        assert json.loads(ack.read_text())["status"] == "accepted"
        with db.transaction(engine) as session:
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 2
    finally:
        engine.dispose()


def test_a_file_whose_tail_cannot_be_read_is_taken_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tail check never stops a round: a file it cannot open (unreadable, or refused as a
    hard link) is judged by the stability rule alone, and the loader reports it as today."""
    inbox = _account(tmp_path)
    cut = inbox / "Acme 20250101.txt"
    _write_in_place(cut, b"VS12345" + b" " * 100, age=3 * STABLE)
    linked = inbox / "Beta 20250101.txt"
    _write_in_place(linked, b"VS12345" + b" " * 100, age=3 * STABLE + 1)
    os.link(linked, tmp_path / "elsewhere.txt")
    tracker = StabilityTracker(STABLE)

    assert tracker.ready(inbox) == [linked]  # a file with other names is never opened here

    def unreadable(path: Path, *, follow_links: bool = False) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(intake_claims, "open_regular", unreadable)
    assert StabilityTracker(STABLE).ready(inbox) == [linked, cut]


def test_an_empty_upload_is_taken_and_rejected_as_before(tmp_path: Path) -> None:
    """SPEC rejects an empty file whole, the master untouched: holding it would only delay
    the insurer's report."""
    inbox = _account(tmp_path)
    upload = inbox / "Acme 20250101.txt"
    _write_in_place(upload, b"", age=3 * STABLE)
    assert StabilityTracker(STABLE).ready(inbox) == [upload]


def test_nothing_is_held_where_every_upload_is_renamed_in_whole(tmp_path: Path) -> None:
    """``OLV_INTAKE_STABLE_SECONDS=0`` says uploads arrive whole: a file that ends mid-record
    is then the insurer's file as it is, taken at once and its cut record reported."""
    inbox = _account(tmp_path)
    cut = inbox / "Acme 20250101.txt"
    _write_in_place(cut, record(NAIC, 1).encode()[:150], age=0)
    assert StabilityTracker(0.0, partial_seconds=60).ready(inbox) == [cut]
    assert StabilityTracker(STABLE, partial_seconds=60).ready(inbox) == []


def test_the_default_grace_keeps_pickup_within_thirty_seconds() -> None:
    settings = IntakeSettings()
    assert settings.intake_poll_seconds + settings.intake_partial_seconds <= 30
    assert StabilityTracker(STABLE).partial_seconds == settings.intake_partial_seconds


def test_the_watch_command_reads_the_grace_from_its_setting(db_url: str, tmp_path: Path) -> None:
    """``olv bob watch`` holds a cut upload younger than OLV_INTAKE_PARTIAL_SECONDS and takes
    one that has stayed cut for longer."""
    base = tmp_path / "intake"
    young, old = _account(base, "acme"), _account(base, "beta")
    cut = 60 * 302 + 150
    _write_in_place(young / "Acme 20250101.txt", _book(tmp_path, 0)[:cut], age=10)
    _write_in_place(old / "Beta 20250101.txt", _book(tmp_path, 1000)[:cut], age=120)
    env = {
        **os.environ,
        "OLV_DATABASE_URL": db_url,
        "OLV_INTAKE_STABLE_SECONDS": "1",
        "OLV_INTAKE_PARTIAL_SECONDS": "60",
    }

    run = subprocess.run(
        [str(Path(sys.executable).with_name("olv")), "bob", "watch", str(base), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stderr
    assert _visible(young) == ["Acme 20250101.txt"]
    assert _visible(old) == []
    held = [json.loads(line) for line in run.stderr.splitlines() if "upload held back" in line]
    assert [(h["account"], h["file"], h["grace_seconds"]) for h in held] == [
        ("acme", "Acme 20250101.txt", 60.0)
    ]
    engine = db.make_engine(db_url)
    try:
        assert _files(engine) == [("Beta 20250101.txt", "accepted", 61, 1)]
    finally:
        engine.dispose()
