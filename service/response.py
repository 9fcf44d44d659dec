"""Building ``CoverageResponse`` (00200510) / ``CoverageResponseDocument`` (00200809).

Echoes what the request carried — requestor, organization, policy and vehicle blocks — and
never the insured's name or address. Every response must validate against the version's
schema, even for an empty or malformed request: where a value as received would break the
schema, a fixed placeholder is echoed instead (the README lists them).
"""

from __future__ import annotations

import copy
import re
from datetime import date, datetime

from lxml import etree

from olv import normalize
from service import codes
from service.codes import Code
from service.ns import IICMVA, q
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
_NSMAP = {None: IICMVA}


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


def _child_text(parent: etree._Element | None, *path: str) -> str | None:
    node = parent
    for step in path:
        if node is None:
            return None
        node = node.find(q(step))
    return None if node is None else (node.text or "")


def _sub(parent: etree._Element, name: str, value: str | None = None) -> etree._Element:
    node = etree.SubElement(parent, q(name))
    if value is not None:
        node.text = value
    return node


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
) -> etree._Element:
    spec = SPECS[version]
    root = etree.Element(q(spec.response_root), _publication(request, version), nsmap=_NSMAP)

    requestor = request.find(q("RequestorInformation")) if request is not None else None
    if echo_requestor and requestor is not None:
        root.append(copy.deepcopy(requestor))

    detail_in = request.find(q("Detail")) if request is not None else None
    info_in = detail_in.find(q("PolicyInformation")) if detail_in is not None else None

    detail = _sub(root, "Detail")
    info = _sub(detail, "PolicyInformation")
    status = _sub(_sub(info, "CoverageStatus"), "ResponseDetails")
    _sub(status, "ResponseCode", "Unconfirmed" if reason_codes else "Confirmed")
    for value in codes.for_version(list(reason_codes), version):
        _sub(status, "UnconfirmedReasonCode", value)

    _sub(
        _sub(info, "OrganizationDetails"),
        "NAIC",
        _safe("NAIC", _child_text(info_in, "OrganizationDetails", "NAIC")),
    )
    policy = _sub(info, "PolicyDetails")
    for name in ("VerificationDate", spec.key_element, "PolicyState"):
        _sub(policy, name, _safe(name, _child_text(info_in, "PolicyDetails", name)))

    vehicle_in = detail_in.find(q("VehicleInformation")) if detail_in is not None else None
    if vehicle_in is not None:
        details_in = vehicle_in.find(q("VehicleDetails"))
        details = _sub(_sub(detail, "VehicleInformation"), "VehicleDetails")
        _sub(details, "VIN", _safe("VIN", _child_text(details_in, "VIN")))
        for name in ("Make", "Model", "Year"):
            value = _child_text(details_in, name)
            if value is not None and not normalize.is_blank(value):
                _sub(details, name, _safe(name, value))
            elif version == V0510:
                # The 00200510 standard requires the three in a response's vehicle block.
                _sub(details, name, PLACEHOLDERS[name])
    return root
