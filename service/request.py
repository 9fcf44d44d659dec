"""Reading a ``CoverageRequest``: the values the decision needs and its schema problems.

Step 3 of the decision table (IDF) covers every schema problem *except* the four data
elements of step 4 being absent, empty or blank. To tell them apart the request is checked
twice only when needed: first as received; if that fails, again on a copy in which those four
elements (where absent or blank) are filled with valid placeholders. Whatever still fails is
a format problem.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import date

from lxml import etree

from olv import normalize
from olv.iicmva import q
from service.versions import SPECS, V0510

_POLICY_INFO = (q("Detail"), q("PolicyInformation"))
_ORG = (*_POLICY_INFO, q("OrganizationDetails"))
_POLICY = (*_POLICY_INFO, q("PolicyDetails"))
_VEHICLE = (q("Detail"), q("VehicleInformation"), q("VehicleDetails"))
_PUBLICATION_ATTRS = ("PublicationVersion", "PublicationDate")


@dataclass(slots=True)
class CoverageQuery:
    version: str
    naic: str | None = None
    policy_key: str | None = None
    vin: str | None = None
    verification_date: str | None = None
    policy_state: str | None = None
    request_reason: str | None = None
    format_errors: list[str] = field(default_factory=list)
    found: dict[str, etree._Element] = field(default_factory=dict, repr=False)

    @property
    def day(self) -> date | None:
        """The verification day: the date part as written, any time or offset ignored."""
        if normalize.is_blank(self.verification_date):
            return None
        text = (self.verification_date or "").strip()
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return None


def _find(root: etree._Element, path: tuple[str, ...]) -> etree._Element | None:
    """The first element at ``path`` (child steps), as ``find`` but without parsing a path."""
    node: etree._Element | None = root
    for step in path:
        if node is None:
            return None
        node = next(node.iterchildren(step), None)
    return node


def _ensure(root: etree._Element, path: tuple[str, ...], before: dict[str, int]) -> etree._Element:
    """Find or create ``path``; a created element goes where the schema's sequence wants it."""
    node = root
    for step in path:
        child = node.find(step)
        if child is None:
            child = etree.Element(step)
            rank = before.get(step, 0)
            index = sum(1 for c in node if isinstance(c.tag, str) and before.get(c.tag, 0) < rank)
            node.insert(index, child)
        node = child
    return node


# Order of siblings in the schema's sequences, for placing inserted placeholders.
_ORDER = {
    q("RequestorInformation"): 0,
    q("Detail"): 1,
    q("PolicyInformation"): 0,
    q("InsuredInformation"): 1,
    q("VehicleInformation"): 2,
    q("OrganizationDetails"): 0,
    q("PolicyDetails"): 1,
    q("VerificationDate"): 0,
    q("PolicyKey"): 1,
    q("UniqueKey"): 1,
    q("PolicyState"): 2,
    q("VIN"): 0,
}
_PLACEHOLDERS = {"naic": "00000", "key": "KEY", "date": "2000-01-01T00:00:00", "vin": "VIN"}

# Far more attributes or elements than any valid CoverageRequest holds (its schema bounds
# every repetition and allows two attributes). Past these the request is invalid without
# asking the schema, which would report every surplus node: a 64 KiB body of 7,000
# attributes cost 30 ms per validation, from anyone, before the requester is even judged.
_MAX_ATTRIBUTES, _MAX_ELEMENTS = 64, 1000
_IMPLAUSIBLE = etree.XPath(f"count(.//@*) > {_MAX_ATTRIBUTES} or count(.//*) > {_MAX_ELEMENTS}")


def within_bounds(raw: bytes) -> bool:
    """Whether no element parsed from ``raw`` can exceed the bounds above: each element
    starts with a "<" and each attribute holds an "=" in the text as received (without a DTD,
    no entity can write either). Counting them is a fraction of what the XPath costs, for the
    usual request of a kilobyte; and a body too short to hold more elements than the bound,
    each at least ``<a/>``, needs no count of its "<"."""
    few_elements = len(raw) <= len(b"<a/>") * _MAX_ELEMENTS or raw.count(b"<") <= _MAX_ELEMENTS
    return few_elements and raw.count(b"=") <= _MAX_ATTRIBUTES


# The local names anything reads from a request's elements (the query, the version's
# detection, the answer's echo).
_READ_NAMES = (
    "NAIC",
    "PolicyKey",
    "UniqueKey",
    "VerificationDate",
    "PolicyState",
    "VIN",
    "Make",
    "Model",
    "Year",
    "ReasonCode",
    "RequestorInformation",
    "VehicleInformation",
)
_READ_TAGS = tuple(q(name) for name in _READ_NAMES)
_LOCAL_NAMES = dict(zip(_READ_TAGS, _READ_NAMES, strict=True))  # one string per name, not a slice


def elements(request: etree._Element, bounded: bool = False) -> dict[str, etree._Element]:
    """First element of each local name that is read (:data:`_READ_NAMES`), in one pass over
    the request: for a request from a document :func:`within_bounds` (a few dozen elements,
    a thousand at most), every element's tag looked up; else lxml asked for those names only,
    which keeps a walk over thousands of elements in C but costs more for the usual request
    (callgrind, a request of the bench: 91,000 instructions against 75,000; lxml's walk for
    the twelve names alone 55,000, its walk over every element 22,000).

    The names the decision needs occur once each in a valid request; a misplaced duplicate
    makes the request schema-invalid, and so IDF, before any value read here is used.
    """
    found: dict[str, etree._Element] = {}
    local = _LOCAL_NAMES
    if bounded:
        for node in request.iter(etree.Element):
            name = local.get(node.tag)
            if name is not None and name not in found:
                found[name] = node
        return found
    for node in request.iter(*_READ_TAGS):
        found.setdefault(local[node.tag], node)
    return found


def _value(found: dict[str, etree._Element], name: str) -> str | None:
    node = found.get(name)
    return None if node is None else (node.text or "")


_DATE_PATH = (*_POLICY, q("VerificationDate"))
_KEY_PATHS = {version: (*_POLICY, q(spec.key_element)) for version, spec in SPECS.items()}


def read(
    request: etree._Element,
    version: str,
    schema: etree.XMLSchema,
    found: dict[str, etree._Element] | None = None,
    bounded: bool = False,
) -> CoverageQuery:
    """``found``: :func:`elements` of ``request``, when the caller has them already;
    ``bounded``: the request came from a document :func:`within_bounds`."""
    spec = SPECS[version]
    key_path = _KEY_PATHS[version]
    date_path = _DATE_PATH
    if found is None:
        found = elements(request)
    query = CoverageQuery(
        version=version,
        naic=_value(found, "NAIC"),
        policy_key=_value(found, spec.key_element),
        vin=_value(found, "VIN"),
        verification_date=_value(found, "VerificationDate"),
        policy_state=_value(found, "PolicyState"),
        request_reason=_value(found, "ReasonCode"),
        found=found,
    )

    candidate = request
    if version == V0510 and any(a in request.attrib for a in _PUBLICATION_ATTRS):
        # 00200510 has no publication attributes; tolerate them rather than fail the request.
        candidate = copy.deepcopy(request)
        for attr in _PUBLICATION_ATTRS:
            candidate.attrib.pop(attr, None)
    # The schema allows VerificationDate only at date_path, so the first one found is the one
    # there in any request that can be valid: only a value with surrounding blanks needs the
    # walk down the path.
    seen = found.get("VerificationDate")
    written = None
    if seen is not None and seen.text and seen.text != seen.text.strip():
        written = _find(candidate, date_path)
    if written is not None and written.text and written.text != written.text.strip():
        # xs:dateTime collapses surrounding whitespace, but libxml2 does not do so for a
        # simple-content type derived from it: the value is valid, so validate it stripped.
        candidate = copy.deepcopy(candidate)
        for node in candidate.iterfind("/".join(date_path)):
            node.text = (node.text or "").strip()
    if not bounded and _IMPLAUSIBLE(candidate):
        query.format_errors = ["more attributes or elements than a valid request holds"]
    elif not schema.validate(candidate):
        patched = copy.deepcopy(candidate)
        fills = [
            (query.naic, (*_ORG, q("NAIC")), _PLACEHOLDERS["naic"]),
            (query.policy_key, key_path, _PLACEHOLDERS["key"]),
            (query.verification_date, date_path, _PLACEHOLDERS["date"]),
        ]
        if _find(patched, (q("Detail"), q("VehicleInformation"))) is not None:
            fills.append((query.vin, (*_VEHICLE, q("VIN")), _PLACEHOLDERS["vin"]))
        for value, path, placeholder in fills:
            present = _find(patched, path)
            if present is not None and len(present):
                continue  # holds child elements: not empty, so a format problem (IDF)
            if normalize.is_blank(value):
                node = _ensure(patched, path, _ORDER)
                node.text = placeholder
                for child in list(node):
                    node.remove(child)
        if not schema.validate(patched):
            query.format_errors = [
                f"line {e.line}: {e.message}" for e in list(schema.error_log)[:5]
            ]
    naic = query.naic
    if (
        not query.format_errors
        and not normalize.is_blank(naic)
        and not normalize.is_ascii_digits(naic.strip())
    ):
        query.format_errors.append("NAIC must be digits")
    return query
