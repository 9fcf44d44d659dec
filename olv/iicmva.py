"""The IICMVA vocabulary: the one definition of what both sides of the wire must agree on.

Namespaces, the two schema versions, the reason codes (00200809 names, 00200510 numbers,
plain-English descriptions), the request reasons and the policy types. The insurer service,
the book-of-business loader and the state portal all import it; it imports nothing of theirs.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DESCRIPTIONS",
    "FIRST_0809_PUBLICATION",
    "FLEET",
    "IICMVA",
    "MAX_CODES",
    "NUMERIC_00200510",
    "POLICY_TYPES",
    "PUBLICATION_DATE_0809",
    "REQUEST_REASONS",
    "REQUEST_REASON_0510",
    "SOAP11_ENV",
    "SOAP12_ENV",
    "SOAP_ACTION",
    "V0510",
    "V0809",
    "VEHICLE_SPECIFIC",
    "VERSIONS",
    "Code",
    "codes_for_number",
    "for_version",
    "q",
]

# --- namespaces ----------------------------------------------------------------------------

IICMVA = "http://www.iicmva.com/CoverageVerification/"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP_ACTION = "http://www.iicmva.com/VerifyInsurance"


def q(name: str) -> str:
    """Clark notation for an IICMVA element: ``q('NAIC')`` → ``'{…}NAIC'``."""
    return f"{{{IICMVA}}}{name}"


# --- versions ------------------------------------------------------------------------------

V0510 = "00200510"
V0809 = "00200809"
VERSIONS: tuple[str, ...] = (V0510, V0809)
# A PublicationVersion at or above this one means the versioned (00200809) rules.
FIRST_0809_PUBLICATION = "00200706"
PUBLICATION_DATE_0809 = "2008-09-01"

# --- policy types (BoB field 1, the policy store) ------------------------------------------

VEHICLE_SPECIFIC = "VS"
FLEET = "NS"  # non-vehicle-specific: verified at policy level
POLICY_TYPES: tuple[str, ...] = (VEHICLE_SPECIFIC, FLEET)

# --- request reasons -----------------------------------------------------------------------

# 00200809 reason → the 00200510 reason that says the same thing.
REQUEST_REASON_0510: dict[str, str] = {
    "ACC": "Accident",
    "ACCV": "TrafficViolationwithAccident",
    "BIVER": "CoverageVerification",
    "PIPVER": "CoverageVerification",
    "REGREN": "RegistrationRenewal",
    "VEHREG": "RegistrationofVehicle",
    "VIOL": "TrafficViolation",
}
REQUEST_REASONS: tuple[str, ...] = tuple(REQUEST_REASON_0510)

# --- reason codes --------------------------------------------------------------------------


class Code(StrEnum):
    IDF = "IDF"
    NAIC1 = "NAIC1"
    NAIC2 = "NAIC2"
    PKEY1 = "PKEY1"
    PKEY2 = "PKEY2"
    PKEY3 = "PKEY3"
    PKEY4 = "PKEY4"
    POL1 = "POL1"
    SYSU = "SYSU"
    UREQ = "UREQ"
    VDT1 = "VDT1"
    VDT2 = "VDT2"
    VIN1 = "VIN1"
    VIN2 = "VIN2"
    VIN3 = "VIN3"
    VIN4 = "VIN4"


NUMERIC_00200510: dict[Code, str] = {
    Code.IDF: "1",
    Code.PKEY1: "2",
    Code.NAIC1: "3",
    Code.VIN4: "4",
    Code.VDT2: "5",
    Code.UREQ: "6",
    Code.NAIC2: "7",
    Code.PKEY2: "7",
    Code.VIN1: "7",
    Code.VDT1: "8",
    Code.VIN2: "8",
    Code.PKEY3: "8",
    Code.PKEY4: "9",
    Code.VIN3: "10",
    Code.POL1: "11",
    Code.SYSU: "12",
}

DESCRIPTIONS: dict[Code, str] = {
    Code.IDF: "Invalid data format in the request",
    Code.NAIC1: "NAIC code not provided",
    Code.NAIC2: "NAIC code not valid for this insurer",
    Code.PKEY1: "Policy key not provided",
    Code.PKEY2: "Policy key not found",
    Code.PKEY3: "Policy found but not in force on the verification date",
    Code.PKEY4: "Policy found but the VIN is not on it",
    Code.POL1: "Policy under manual review; cannot confirm now",
    Code.SYSU: "System unavailable; try again later",
    Code.UREQ: "Requestor not authorized",
    Code.VDT1: "Verification date outside the answerable window",
    Code.VDT2: "Verification date not provided",
    Code.VIN1: "VIN not found",
    Code.VIN2: "VIN found but not covered on the verification date",
    Code.VIN3: "VIN found on another policy of this insurer",
    Code.VIN4: "VIN not provided",
}

MAX_CODES = 5


def for_version(codes: list[Code] | tuple[Code, ...], version: str) -> list[str]:
    """Wire values for ``version``: names for 00200809, numbers (deduplicated) for 00200510."""
    values = [NUMERIC_00200510[c] if version == V0510 else c.value for c in codes]
    return list(dict.fromkeys(values))[:MAX_CODES]


def codes_for_number(number: str) -> tuple[Code, ...]:
    """The 00200809 codes a 00200510 number stands for (``'7'`` → NAIC2, PKEY2, VIN1)."""
    wanted = number.strip()
    return tuple(code for code, numeric in NUMERIC_00200510.items() if numeric == wanted)
