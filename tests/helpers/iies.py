"""Insurer transaction rows and registrations for the enforcement tests."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from enforcement.edits import HEADER

VIN_A = "1HGCM82633A004352"  # check digit right
VIN_B = "1FTRX18L1XKA12345"  # check digit right (computed below in tests that need it)
NAIC = "12345"
OTHER_NAIC = "54321"


def row(**changes: str) -> dict[str, str]:
    """A valid NBS for an individual; keyword arguments replace elements."""
    base = {
        "txn_id": "T1",
        "type": "NBS",
        "naic": NAIC,
        "effective_date": "2026-11-01",
        "policy_number": "P-100",
        "policy_type": "1",
        "entity_type": "1",
        "last_name": "SMITH",
        "first_name": "JOHN",
        "middle_name": "A",
        "dob": "1980-02-03",
        "dl_number": "",
        "fein": "",
        "zip": "12207",
        "vin": VIN_A,
        "plate": "",
        "vehicle_year": "2003",
        "make": "HONDA",
        "tracking_number": "",
    }
    base.update(changes)
    return base


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text(csv_text(rows), encoding="utf-8")
    return path


REGISTRATION_HEADER = (
    "plate,state,vin,entity_type,last_name,first_name,middle_name,dob,dl_number,fein,zip,"
    "address1,city,status"
)
