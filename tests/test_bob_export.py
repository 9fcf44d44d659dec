"""``service.bob_export``: the insurer's monthly file, from its policy store, parses back."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bob_loader import synth
from olv import db
from olv.bob import layout
from olv.bob.parser import read_bob
from service.bob_export import ExportError, export_file
from service.models import Coverage, Policy


def fill_store(url: str) -> None:
    engine = db.make_engine(url)
    with db.transaction(engine) as session:
        vs = Policy(naic="12345", policy_number="AB-100", policy_key="AB100", policy_type="VS")
        vs.coverages = [
            Coverage(
                naic="12345",
                vin=synth.make_vin("12345", 1),
                effective_date=date(2026, 1, 1),
                expiration_date=date(2027, 1, 1),
                cancel_date=date(2026, 6, 15),
            ),
            Coverage(naic="12345", vin="ABC123", effective_date=date(2025, 3, 1)),
        ]
        fleet = Policy(naic="12345", policy_number="FLEET 7", policy_key="FLEET7", policy_type="NS")
        fleet.coverages = [Coverage(naic="12345", vin=None, effective_date=date(2026, 2, 1))]
        other = Policy(naic="99999", policy_number="Z1", policy_key="Z1", policy_type="VS")
        other.coverages = [Coverage(naic="99999", vin="ABC999", effective_date=date(2026, 1, 1))]
        session.add_all([vs, fleet, other])
    engine.dispose()


def test_export_writes_the_layout_with_crlf_and_a_trailer(db_url: str, tmp_path: Path):
    fill_store(db_url)
    out = tmp_path / "Acme 20261122.txt"
    engine = db.make_engine(db_url)
    count = export_file(engine, "12345", out, today=date(2026, 11, 22))
    engine.dispose()
    assert count == 3
    data = out.read_bytes()
    lines = data.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) == 300 for line in lines[:-1])
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert lines[3].decode() == layout.format_trailer(3, "20261122")
    parsed = list(read_bob(out))
    assert all(p.ok and not p.issues for p in parsed)
    got = [
        (r.policy_type, r.naic, r.policy_number, r.vin, r.effective_date, r.expiration_date)
        for r in (p.record for p in parsed)
    ]
    assert got == [
        ("VS", "12345", "AB-100", "ABC123", date(2025, 3, 1), None),
        # the cancellation ends the coverage before its expiration: the BoB carries the earlier
        ("VS", "12345", "AB-100", synth.make_vin("12345", 1), date(2026, 1, 1), date(2026, 6, 15)),
        ("NS", "12345", "FLEET 7", "", date(2026, 2, 1), None),
    ]
    # The store holds no insured names or addresses; those fields stay blank.
    assert all(not p.record.fields["last_name"] and not p.record.fields["address"] for p in parsed)


def test_export_refuses_what_does_not_fit_and_writes_nothing(db_url: str, tmp_path: Path):
    engine = db.make_engine(db_url)
    with db.transaction(engine) as session:
        policy = Policy(naic="12345", policy_number="X" * 31, policy_key="X" * 31, policy_type="VS")
        policy.coverages = [Coverage(naic="12345", vin="ABC123", effective_date=date(2026, 1, 1))]
        session.add(policy)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.txt"
    with pytest.raises(ExportError, match="longer than 30"):
        export_file(engine, "12345", out)
    with pytest.raises(ExportError, match="5 digits"):
        export_file(engine, "1234", out)
    engine.dispose()
    assert list(out_dir.iterdir()) == []
