"""The IICMVA reason-code table: 00200809 codes, their 00200510 numbers and descriptions.

This is the one definition of the codes; the decision table, the SOAP responses and the
portal all read it.
"""

from __future__ import annotations

from enum import StrEnum


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


def for_version(codes: list[Code], version: str) -> list[str]:
    """Wire values for ``version``: names for 00200809, numbers (deduplicated) for 00200510."""
    values = [NUMERIC_00200510[c] if version == "00200510" else c.value for c in codes]
    return list(dict.fromkeys(values))[:MAX_CODES]
