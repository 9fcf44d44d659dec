"""Building ``CoverageResponse`` (00200510) / ``CoverageResponseDocument`` (00200809).

Echoes what the request carried — requestor, organization, policy and vehicle blocks — and
never the insured's name or address. Every response must validate against the version's
schema, even for an empty or malformed request: where a value as received would break the
schema, a fixed placeholder is echoed instead (the README lists them).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from olv import iicmva, normalize
from olv.iicmva import IICMVA, Code
from service.request import elements
from service.versions import SPECS, V0510

PLACEHOLDERS = {
    "NAIC": "00000",
    "PolicyKey": "NONE",
    "UniqueKey": "NONE",
    "VerificationDate": "1900-01-01T00:00:00",
    "PolicyState": "XX",
    "VIN": "NONE",
    "Make": "UNKNOWN",
    "Model": "UNKNOWN",
    "Year": "0000",
}
_MAX_LENGTH = {"NAIC": 20, "PolicyKey": 50, "UniqueKey": 50, "VIN": 30, "Make": 50, "Model": 50}
_MIN_LENGTH = {"NAIC": 2}
_DATETIME = re.compile(r"^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
_YEAR = re.compile(r"^\d{4}$")
_VERSION = re.compile(r"^\d{8}$")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def _safe(name: str, value: str | None) -> str:
    """``value`` if the schema accepts it for element ``name``, else the placeholder."""
    if value is None:
        return PLACEHOLDERS[name]
    text = " ".join(value.split())  # token semantics: what a collapsing schema would see
    if not text:
        return PLACEHOLDERS[name]
    if name == "VerificationDate":
        if _DATETIME.match(value.strip()) and _real_datetime(value.strip()):
            return value.strip()
        return PLACEHOLDERS[name]
    if name == "PolicyState":
        return value if len(value) == 2 and value.strip() else PLACEHOLDERS[name]
    if name == "Year":
        return value if _YEAR.match(value) else PLACEHOLDERS[name]
    if not (_MIN_LENGTH.get(name, 1) <= len(value) <= _MAX_LENGTH.get(name, 80)):
        return PLACEHOLDERS[name]
    if value != text and name in ("NAIC", "UniqueKey", "VIN"):
        return text
    return value


def _real_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _publication(request: etree._Element | None, version: str) -> dict[str, str]:
    spec = SPECS[version]
    if spec.default_publication_version is None:
        return {}
    found_version = (request.get("PublicationVersion") or "").strip() if request is not None else ""
    found_date = (request.get("PublicationDate") or "").strip() if request is not None else ""
    try:
        date.fromisoformat(found_date)
        valid_date = len(found_date) == 10
    except ValueError:
        valid_date = False
    return {
        "PublicationVersion": found_version
        if _VERSION.match(found_version)
        else spec.default_publication_version,
        "PublicationDate": found_date if valid_date else str(spec.default_publication_date),
    }


def build(
    request: etree._Element | None,
    version: str,
    reason_codes: tuple[Code, ...],
    *,
    echo_requestor: bool = True,
    found: dict[str, etree._Element] | None = None,
) -> etree._Element:
    """The response element. Assembled as text and parsed once: for a document this small
    that is several times cheaper than creating each element through the lxml API."""
    spec = SPECS[version]
    if found is None:
        found = elements(request) if request is not None else {}

    def value(name: str) -> str | None:
        node = found.get(name)
        return None if node is None else (node.text or "")

    parts = [f'<{spec.response_root} xmlns="{IICMVA}"']
    for attr, attr_value in _publication(request, version).items():
        parts.append(f" {attr}={quoteattr(attr_value)}")
    parts.append(">")
    requestor = found.get("RequestorInformation")
    if echo_requestor and requestor is not None and requestor.getparent() is request:
        parts.append(etree.tostring(requestor, encoding="unicode", with_tail=False))
    status = "Unconfirmed" if reason_codes else "Confirmed"
    parts.append(
        "<Detail><PolicyInformation><CoverageStatus><ResponseDetails>"
        f"<ResponseCode>{status}</ResponseCode>"
    )
    for code in iicmva.for_version(list(reason_codes), version):
        parts.append(f"<UnconfirmedReasonCode>{code}</UnconfirmedReasonCode>")
    parts.append(
        "</ResponseDetails></CoverageStatus>"
        f"<OrganizationDetails><NAIC>{escape(_safe('NAIC', value('NAIC')))}</NAIC>"
        "</OrganizationDetails><PolicyDetails>"
    )
    for name in ("VerificationDate", spec.key_element, "PolicyState"):
        parts.append(f"<{name}>{escape(_safe(name, value(name)))}</{name}>")
    parts.append("</PolicyDetails></PolicyInformation>")
    if "VehicleInformation" in found:
        parts.append(
            f"<VehicleInformation><VehicleDetails><VIN>{escape(_safe('VIN', value('VIN')))}</VIN>"
        )
        for name in ("Make", "Model", "Year"):
            text = value(name)
            if text is not None and not normalize.is_blank(text):
                parts.append(f"<{name}>{escape(_safe(name, text))}</{name}>")
            elif version == V0510:
                # The 00200510 standard requires the three in a response's vehicle block.
                parts.append(f"<{name}>{PLACEHOLDERS[name]}</{name}>")
        parts.append("</VehicleDetails></VehicleInformation>")
    parts.append(f"</Detail></{spec.response_root}>")
    return etree.fromstring("".join(parts), _PARSER)
