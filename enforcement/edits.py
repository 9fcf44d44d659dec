"""The edits of SPEC §6: every rule a transaction row must pass, each with its own code
(:data:`enforcement.codes.EDITS`). A row failing any edit is disposition E and is not matched.

A row arrives as the CSV's text fields; :func:`edit` returns the :class:`Txn` to store (text
cut to its column, dates only when real) and the codes it earned. Sequence rules need the
registration's history and live in :mod:`enforcement.sequence`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from olv import normalize
from olv import vin as vin_rules

HEADER = (
    "txn_id",
    "type",
    "naic",
    "effective_date",
    "policy_number",
    "policy_type",
    "entity_type",
    "last_name",
    "first_name",
    "middle_name",
    "dob",
    "dl_number",
    "fein",
    "zip",
    "vin",
    "plate",
    "vehicle_year",
    "make",
    "tracking_number",
)
TYPES = ("NBS", "REI", "XLC", "REP", "REC", "NIS")
FILINGS = ("NBS", "REI", "XLC")  # the types that describe a policy and vehicle in full
# Column sizes (enforcement.models.IiesTransaction): a longer value is edit E33.
WIDTHS = {
    "txn_id": 40,
    "policy_number": 50,
    "last_name": 100,
    "first_name": 50,
    "middle_name": 50,
    "dl_number": 20,
    "fein": 9,
    "zip": 10,
    "vin": 25,
    "plate": 12,
    "vehicle_year": 4,
    "make": 20,
    "tracking_number": 20,
}
EARLIEST_EFFECTIVE = date(1950, 1, 1)
FUTURE_EFFECTIVE_DAYS = 60  # for-hire cancellations are filed ahead (the guide: >= 20 days)
OLDEST_LIVING_YEARS = 120
DEFAULT_DATES = frozenset({date(1900, 1, 1), date(1, 1, 1), date(9999, 12, 31)})
VIN_WORDS = (
    "UNKNOWN",
    "UNK",
    "NA",
    "TOFOLLOW",
    "TOBEDETERMINED",
    "TBD",
    "SEEPOLICY",
    "REQUESTED",
    "NOTVALID",
    "VEHICLESVARIOUS",
    "VARIOUS",
    "HIREDAUTO",
    "FLEETPOLICY",
    "NONOWNEDVEHICLE",
    "NONOWNED",
    "NONE",
)
DEALER_VIN = "NYDLR62MCD64TRA66"  # the guide's dummy VIN for dealer/transporter registrations
DEFAULT_MAKES = frozenset({"UNKN", "UNK", "UNKNOWN", "N/A", "NA", "OTHER", "AAAAA", "XXX", "NONE"})
NAME_AFFIXES = frozenset({"JR", "SR", "II", "III", "IV", "MR", "MRS", "MS", "DR", "ESQ"})

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAME = re.compile(r"^[A-Z0-9 -]*$")
_VIN_CHARS = re.compile(r"^[A-HJ-NPR-Z0-9]+$")
_ZIP = re.compile(r"^\d{5}(-?\d{4})?$")
_BAD_TEXT = re.compile(r"[*~]")
_LOWER = re.compile(r"[a-z]")


def _too_long(raw: dict[str, str]) -> bool:
    return any(len(raw[k]) > w for k, w in WIDTHS.items() if k != "plate")


@dataclass(slots=True)
class Txn:
    """One transaction as stored: text as sent (cut to its column), real dates only."""

    line: int
    txn_id: str
    type: str
    naic: str
    effective_date: date | None = None
    policy_number: str | None = None
    policy_type: str | None = None
    entity_type: str | None = None
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    dob: date | None = None
    dl_number: str | None = None
    fein: str | None = None
    zip: str | None = None
    vin: str | None = None
    plate: str | None = None
    vehicle_year: str | None = None
    make: str | None = None
    tracking_number: str | None = None
    codes: list[str] = field(default_factory=list)

    @property
    def individual(self) -> bool:
        return self.entity_type != "2"


def _date(text: str) -> date | None:
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _repetitive(vin: str) -> bool:
    """All one character, consecutive (ascending or descending) or two alternating."""
    if len(set(vin)) == 1:
        return True
    steps = {ord(b) - ord(a) for a, b in zip(vin, vin[1:], strict=False)}
    if steps in ({1}, {-1}):
        return True
    return len(set(vin[0::2])) == 1 and len(set(vin[1::2])) == 1


def _padded(vin: str) -> bool:
    """Filled on the left or right with one repeated character (``0000012345``)."""
    run = 7 if len(vin) >= 11 else 4
    return len(set(vin[:run])) == 1 or len(set(vin[-run:])) == 1


def vin_codes(vin: str, model_year: int | None) -> list[str]:
    """34.9(f)(21): complete, right length for the year, check digit, no words or patterns."""
    squeezed = re.sub(r"[^A-Z0-9]", "", vin.upper())
    if squeezed in VIN_WORDS or any(squeezed.startswith(w) for w in VIN_WORDS if len(w) > 3):
        return ["E43"]
    if vin == DEALER_VIN:
        return []
    found: list[str] = []
    if not _VIN_CHARS.match(vin):
        found.append("E40")
    modern = model_year is None or model_year >= 1981
    full = len(vin) == vin_rules.LENGTH
    if not full if model_year and model_year >= 1981 else not 5 <= len(vin) <= vin_rules.LENGTH:
        found.append("E41")
    elif modern and full and not found and not vin_rules.check_digit_ok(vin):
        found.append("E42")
    if _repetitive(vin):
        found.append("E44")
    elif _padded(vin):
        found.append("E46")
    digits = sum(ch.isdigit() for ch in vin)
    if digits * 5 < len(vin):  # all or primarily letters: under 20 % digits
        found.append("E45")
    return found


def name_codes(txn: Txn) -> list[str]:
    """34.9(f)(12): the hyphen is the only punctuation; no AND/& or estates; no affixes."""
    found: list[str] = []
    names = [n for n in (txn.last_name, txn.first_name, txn.middle_name) if n]
    if any(not _NAME.match(n) for n in names):
        found.append("E50")
    words = [w for n in names for w in re.split(r"[\s]+", n) if w]
    joined = {"AND", "OR", "AND/OR", "&"} & set(words) or "&" in "".join(names)
    if (txn.individual and joined) or (txn.last_name or "").startswith("ESTATE OF"):
        found.append("E51")
    if txn.individual and NAME_AFFIXES & set(words):
        found.append("E52")
    return found


def edit(row: dict[str, str], line: int, sender_naic: str, today: date) -> Txn:
    """The stored form of one CSV row and every edit code it earns (``txn.codes``)."""
    raw = {k: (row.get(k) or "").strip() for k in HEADER}
    codes: list[str] = []

    def add(code: str) -> None:
        if code not in codes:
            codes.append(code)

    whole = "\x1f".join(raw.values())  # one scan of the row for what no element may hold
    clean_text = normalize.is_field_text(whole.replace("\x1f", ""))
    if not clean_text or _BAD_TEXT.search(whole) or _too_long(raw):
        add("E33")
    if _LOWER.search(whole):
        add("E20")
    cut = {k: (v[: WIDTHS[k]] if k in WIDTHS else v) for k, v in raw.items()}
    if not clean_text:  # keep what can be stored: control characters dropped
        cut = {k: "".join(ch for ch in v if normalize.is_field_text(ch)) for k, v in cut.items()}

    txn = Txn(line=line, txn_id=cut["txn_id"][:40], type=raw["type"].upper()[:3], naic=sender_naic)
    if not raw["txn_id"] or len(raw["txn_id"]) > 40:
        add("E01")
    if raw["type"].upper() not in TYPES:
        add("E02")
    if not normalize.is_naic(raw["naic"]):
        add("E03")
    elif raw["naic"] != sender_naic:
        add("E04")
    for name in (
        "policy_number",
        "last_name",
        "first_name",
        "middle_name",
        "dl_number",
        "fein",
        "zip",
        "make",
        "tracking_number",
        "vehicle_year",
    ):
        setattr(txn, name, cut[name].upper() or None)
    txn.vin = normalize.vin(cut["vin"]) or None
    txn.plate = normalize.plate(cut["plate"]) or None
    txn.policy_type = cut["policy_type"][:1] or None
    txn.entity_type = cut["entity_type"][:1] or None
    kind = txn.type

    # dates: real, no defaults, in range
    if raw["effective_date"]:
        effective = _date(raw["effective_date"])
        if effective is None:
            add("E21")
        elif (
            effective in DEFAULT_DATES
            or effective < EARLIEST_EFFECTIVE
            or effective > today + timedelta(days=FUTURE_EFFECTIVE_DAYS)
        ):
            add("E22")
        else:
            txn.effective_date = effective
    else:
        add("E05")
    if raw["dob"]:
        dob = _date(raw["dob"])
        if dob is None:
            add("E23")
        elif (
            dob in DEFAULT_DATES
            or dob > today
            or dob < today.replace(year=today.year - OLDEST_LIVING_YEARS, day=1)
        ):
            add("E24")
        else:
            txn.dob = dob

    # coded values
    if raw["policy_type"]:
        if raw["policy_type"] not in "12345678" or len(raw["policy_type"]) != 1:
            add("E25")
        elif raw["policy_type"] == "4":
            add("E34")
    if raw["entity_type"] and raw["entity_type"] not in ("1", "2"):
        add("E26")
    if raw["dl_number"] and not normalize.is_ascii_digits(raw["dl_number"], 9):
        add("E27")
    if raw["fein"] and not normalize.is_ascii_digits(raw["fein"], 9):
        add("E28")
    if raw["zip"] and not _ZIP.match(raw["zip"]):
        add("E29")
    model_year: int | None = None
    if raw["vehicle_year"]:
        if normalize.is_ascii_digits(raw["vehicle_year"], 4) and (
            1900 <= int(raw["vehicle_year"]) <= today.year + 1
        ):
            model_year = int(raw["vehicle_year"])
        else:
            add("E30")
    if raw["make"].upper() in DEFAULT_MAKES and not (
        raw["make"].upper() == "NONE" and raw["policy_type"] == "8"
    ):
        add("E31")
    if raw["plate"] and not 1 <= len(normalize.plate(raw["plate"])) <= WIDTHS["plate"]:
        add("E32")

    # required elements per type
    individual = raw["entity_type"] != "2"
    if kind in TYPES:
        required = ["vin", "entity_type", "last_name"]
        if kind in FILINGS:
            required += ["policy_number", "policy_type", "vehicle_year", "make"]
            if individual:
                required += ["first_name", "dob"]
        if kind == "NIS":
            required += ["tracking_number"] + (["first_name"] if individual else [])
        missing_code = {
            "policy_number": "E06",
            "policy_type": "E07",
            "entity_type": "E08",
            "last_name": "E09",
            "first_name": "E10",
            "dob": "E11",
            "vin": "E12",
            "vehicle_year": "E13",
            "make": "E14",
            "tracking_number": "E15",
        }
        for name in required:
            if not raw[name]:
                add(missing_code[name])

    if txn.vin:
        for code in vin_codes(txn.vin, model_year):
            add(code)
    for code in name_codes(txn):
        add(code)
    txn.codes = sorted(codes)
    return txn
