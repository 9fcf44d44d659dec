"""The project's own IICMVA XSD and WSDL files, found through the installed package."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
VERSIONS = ("00200510", "00200809")


def schema_path(version: str) -> Path:
    return HERE / f"iicmva_{version}" / "CoverageVerification.xsd"


def wsdl_path(version: str) -> Path:
    return HERE / f"iicmva_{version}" / "VerifyService.wsdl"
