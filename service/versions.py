"""What differs between the two IICMVA versions, and how the auto endpoint tells them apart."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from olv.iicmva import FIRST_0809_PUBLICATION, PUBLICATION_DATE_0809, V0510, V0809, q

_VERSION_PATTERN = re.compile(r"^\d{8}$")
DEFAULT_VERSION = V0809  # what the auto-detecting endpoint's WSDL describes


@dataclass(frozen=True, slots=True)
class VersionSpec:
    version: str
    key_element: str
    response_root: str
    soap12: bool
    # Placeholder publication attributes echoed when the request's own are missing or invalid.
    default_publication_version: str | None
    default_publication_date: str | None


SPECS = {
    V0510: VersionSpec(V0510, "UniqueKey", "CoverageResponse", False, None, None),
    V0809: VersionSpec(
        V0809, "PolicyKey", "CoverageResponseDocument", True, V0809, PUBLICATION_DATE_0809
    ),
}


def detect(request: etree._Element, found: Mapping[str, etree._Element] | None = None) -> str:
    """The rules a request on the auto-detecting endpoint is answered by (SPEC §1).

    A ``PolicyKey`` element means 00200809 whatever the attribute says: only that version
    has the element, so the request cannot be read by 00200510 rules. Without one, a
    ``PublicationVersion`` that is not 8 digits still claims the versioned (00200809) format,
    so it is judged — and rejected as IDF — by 00200809 rules. ``found``: the request's
    elements by local name (:func:`service.request.elements`), when the caller has them.
    """
    if found is not None:
        has_policy_key = "PolicyKey" in found
    else:
        has_policy_key = request.find(f".//{q('PolicyKey')}") is not None
    if has_policy_key:
        return V0809
    published = request.get("PublicationVersion")
    if published is not None:
        text = published.strip()
        if not _VERSION_PATTERN.match(text) or text >= FIRST_0809_PUBLICATION:
            return V0809
    return V0510
