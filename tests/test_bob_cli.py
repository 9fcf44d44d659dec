"""The ``olv bob`` command-line contract (SPEC §3), run as a subprocess like an operator would."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bob_loader import synth
from olv import db
from olv.cli import app, run
from service.models import Coverage, Policy
from tests.helpers import prewarmed


def olv(*args: str, stdin: str | None = None, cwd: Path | None = None):
    # The environment carries OLV_DATABASE_URL from the db_url fixture.
    return prewarmed.run(args, stdin=stdin, cwd=cwd)


def test_load_exit_codes_summary_and_report(db_url: str, tmp_path: Path):
    good = tmp_path / "Acme 20261101.txt"
    bad = tmp_path / "Beta 20261101.txt"
    synth.write_file(good, synth.records("12345", 100))
    synth.write_file(bad, synth.records("54321", 10), trailer_count=9)
    reports = tmp_path / "reports"

    run = olv("bob", "load", str(good), str(bad), "--report-dir", str(reports), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Acme 20261101.txt: accepted; 100 records loaded, 0 errors")
    assert lines[1].startswith("Beta 20261101.txt: rejected;")
    assert "trailer mismatch" in lines[1]
    report = (reports / "Beta 20261101.txt.errors.txt").read_text()
    assert "status: rejected" in report
    assert "reason: trailer mismatch: trailer says 9 records, file has 10" in report
    assert not (reports / "Acme 20261101.txt.errors.txt").exists()

    again = olv("bob", "load", str(good))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Acme 20261101.txt: duplicate; NAIC 12345; already loaded")


def test_lookup_stats_and_stdin(db_url: str, tmp_path: Path):
    path = tmp_path / "Acme 20261101.txt"
    synth.write_file(path, synth.records("12345", 2000))
    assert olv("bob", "load", str(path)).returncode == 0

    hit = synth.make_vin("12345", 42)
    run = olv("bob", "lookup", hit.lower(), "NOSUCHVIN123")
    assert run.returncode == 0, run.stderr
    [record] = [json.loads(line) for line in run.stdout.splitlines()]
    assert record["vin"] == hit and record["naic"] == "12345"
    assert record["policy_number"] == "POL-0-000000042" and record["policy_type"] == "VS"
    assert record["effective_date"] == "2026-02-12" and record["expiration_date"] == "2027-02-12"
    assert record["source_file"] == "Acme 20261101.txt" and record["loaded_at"]

    miss = olv("bob", "lookup", "NOSUCHVIN123")
    assert (miss.returncode, miss.stdout) == (1, "")

    # 100,000 VINs on stdin, 2,000 of them known: batched queries keep this quick.
    vins = [synth.make_vin("12345", i) for i in range(2000)]
    vins += [synth.make_vin("12345", i, series=3) for i in range(98_000)]
    piped = olv("bob", "lookup", "-", stdin="\n".join(vins) + "\n")
    assert piped.returncode == 0, piped.stderr
    assert len(piped.stdout.splitlines()) == 2000
    # A line of megabytes is skipped with a warning, not held in memory; the next is read.
    flat = olv("bob", "lookup", "-", stdin="X" * (4 << 20) + "\n" + vins[7] + "\n")
    assert flat.returncode == 0, flat.stderr
    assert "line 1: not a VIN" in flat.stderr and len(flat.stdout.splitlines()) == 1

    stats = olv("bob", "stats")
    assert stats.returncode == 0
    [row] = [json.loads(line) for line in stats.stdout.splitlines()]
    assert (row["naic"], row["records"], row["file"]) == ("12345", 2000, "Acme 20261101.txt")
    assert row["loaded_at"].endswith("+00:00")


def test_contacts_are_added_listed_and_bad_ones_refused_with_exit_2(
    db_url: str, capsys: pytest.CaptureFixture[str]
):
    # In-process (olv.cli.run, the path main takes): no process-level behaviour to check.
    runner = CliRunner()
    add = ["bob", "contacts", "add", "--naic", "12345", "--email"]
    assert runner.invoke(app, [*add, "bob@acme.test"]).exit_code == 0
    assert runner.invoke(app, [*add, "x@acme.test", "--name", "X"]).exit_code == 0
    capsys.readouterr()
    assert run(["bob", "contacts", "add", "--naic", "12A45", "--email", "x@y.z"]) == 2
    assert capsys.readouterr().err == "error: NAIC '12A45' must be 5 digits\n"
    assert run([*add, "not-an-address"]) == 2
    assert capsys.readouterr().err == "error: 'not-an-address' is not an e-mail address\n"
    listed = runner.invoke(app, ["bob", "contacts", "list"])
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [
        {"naic": "12345", "name": None, "email": "bob@acme.test"},
        {"naic": "12345", "name": "X", "email": "x@acme.test"},
    ]


def test_export_from_the_insurer_store_loads_at_the_state(db_url: str, tmp_path: Path):
    engine = db.make_engine(db_url)
    with db.transaction(engine) as session:
        policy = Policy(naic="12345", policy_number="P-1", policy_key="P1", policy_type="VS")
        policy.coverages = [
            Coverage(naic="12345", vin=synth.make_vin("12345", i), effective_date=date(2026, 1, 1))
            for i in range(25)
        ]
        session.add(policy)
    engine.dispose()
    out = tmp_path / "Acme 20261122.txt"
    run = olv("bob", "export", "--naic", "12345", "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{out}: 25 records for NAIC 12345"
    loaded = olv("bob", "load", str(out))
    assert loaded.returncode == 0 and "accepted; 25 records loaded" in loaded.stdout


def test_load_a_file_whose_name_is_not_text(db_url: str, tmp_path: Path):
    """A byte 0xFF in a name (a Samba share, an old client) is no reason to refuse the file:
    it is loaded and stored, printed and reported under the displayable name the intake uses."""
    import os
    import subprocess
    import sys

    path = tmp_path / os.fsdecode(b"Acme \xff 20261101.txt")
    synth.write_file(path, synth.records("12345", 10), trailer_count=11)
    olv_exe = Path(sys.executable).with_name("olv")
    done = subprocess.run(
        [olv_exe, "bob", "load", os.fsencode(path)], capture_output=True, timeout=120
    )
    assert done.returncode == 1, done.stderr  # rejected (the trailer), not crashed
    assert done.stdout.decode(errors="surrogateescape").startswith("Acme ? 20261101.txt: rejected;")
    report = path.with_name(path.name + ".errors.txt").read_text()
    assert "file: Acme ? 20261101.txt" in report

    synth.write_file(path, synth.records("12345", 10))
    done = subprocess.run(
        [olv_exe, "bob", "load", os.fsencode(path)], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode(errors="surrogateescape").startswith(
        "Acme ? 20261101.txt: accepted; 10 records loaded"
    )
    [stats] = [json.loads(line) for line in olv("bob", "stats").stdout.splitlines()]
    assert stats["file"] == "Acme ? 20261101.txt" and stats["records"] == 10
