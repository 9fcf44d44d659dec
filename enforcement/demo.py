"""Enforcement in ``olv demo``: the demo plates get registrants, the demo insurer sends its
events (a cancellation among them, which becomes a first inquiry letter), and once the SOAP
service is up, paper proof for the confirmed plate is verified live with it."""

from __future__ import annotations

import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

from enforcement import mailing
from enforcement.case_settings import get_case_settings
from enforcement.edits import HEADER
from enforcement.load import load
from enforcement.proof import ProofInput, post
from enforcement.registrations import import_file
from enforcement.run import run

STATE = "ID"
# plate, VIN, registrant (last, first), address. DEMO1 is the portal demo's confirmed plate;
# DEMO5 is added here, with a VIN whose check digit passes the intake's edits.
REGISTRANTS = (
    ("DEMO1", "1HGCM82633A004352", "SMITH", "JOHN", "1 MAIN ST", "BOISE", "83702"),
    ("DEMO5", "1FTFW1ET9DFC10312", "GARCIA", "MARIA", "22 RIVER RD", "NAMPA", "83651"),
)
CONFIRMED_POLICY = "DEMO-1001"
LETTERS_DIR = "olv-demo-letters"


def _events(naic: str, today: date) -> bytes:
    def iso(days_ago: int) -> str:
        return (today - timedelta(days=days_ago)).isoformat()

    rows = [
        ("D-NBS-1", "NBS", "DEMO1", 0, iso(300)),
        ("D-NBS-5", "NBS", "DEMO5", 1, iso(300)),
        ("D-XLC-5", "XLC", "DEMO5", 1, iso(35)),
    ]
    lines = [",".join(HEADER)]
    for txn_id, kind, plate, index, effective in rows:
        _, vin, last, first, _, _, zip_code = REGISTRANTS[index]
        values = {
            "txn_id": txn_id,
            "type": kind,
            "naic": naic,
            "effective_date": effective,
            "policy_number": f"DEMO-100{index + 1}",
            "policy_type": "1",
            "entity_type": "1",
            "last_name": last,
            "first_name": first,
            "dob": "1980-05-01",
            "zip": zip_code,
            "vehicle_year": "2013",
            "make": "FORD",
            "vin": vin,
            "plate": plate,
        }
        lines.append(",".join(values.get(name, "") for name in HEADER))
    return ("\n".join(lines) + "\n").encode()


def seed(engine: Engine, naic: str, today: date, workdir: Path) -> dict[str, object]:
    """Registrants, the insurer's events, the daily runs since the cancellation, the letters."""
    people = workdir / "olv-demo-registrants.csv"
    people.write_text(
        "plate,state,vin,entity_type,last_name,first_name,address1,city,zip,status\n"
        + "".join(
            f"{plate},{STATE},{vin},1,{last},{first},{street},{city},{zip_code},active\n"
            for plate, vin, last, first, street, city, zip_code in REGISTRANTS
        )
    )
    import_file(engine, people)
    load(engine, _events(naic, today), name="IIES demo.csv", channel="cli", sender_naic=naic)
    settings = get_case_settings()
    cancelled = today - timedelta(days=35)
    letter_day = cancelled + timedelta(days=settings.grace_days)
    for day in (cancelled, letter_day, today):
        run(engine, day, settings)
    printed = mailing.write_day(engine, letter_day, workdir / LETTERS_DIR)
    return {"cancelled": cancelled, "letter_day": letter_day, **printed}


def wait_for(soap_base: str, seconds: float = 60) -> None:
    """Until the demo's SOAP service answers (or the time is up: the proof then gets an MVF)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # The standard library's client: httpx is a test dependency only, and the demo runs
        # from a plain install.
        try:
            with urllib.request.urlopen(f"{soap_base}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:  # refused, reset, timed out, or an HTTP error status
            pass
        time.sleep(0.2)


def prove_live(engine: Engine, naic: str, today: date) -> dict[str, object]:
    """Post the confirmed plate's insurance card; the demo insurer confirms it live."""
    proof = ProofInput("DEMO1", STATE, naic, CONFIRMED_POLICY, today)
    return post(engine, proof, get_case_settings(), who="demo")


def banner() -> str:
    vin = REGISTRANTS[1][1]
    return (
        "\nEnforcement (SPEC §6), set up once the SOAP service answers:\n"
        "  DEMO5's insurer cancelled 35 days ago: a first inquiry letter went out 25 days ago\n"
        f"    letters and mailing.csv: ./{LETTERS_DIR}/\n"
        f"    olv iies case {vin}        (also: the Enforcement page, signed in as dmv)\n"
        "  DEMO1's paper proof is verified live with the demo insurer once the service is up\n"
        "    (the Paper proof page does the same for any plate)\n"
        "  public status page: /iies/status (the letter's Document ID and plate DEMO5)\n"
    )
