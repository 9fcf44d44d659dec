"""Building ``CoverageResponse`` (00200510) / ``CoverageResponseDocument`` (00200809).

Echoes what the request carried — requestor, organization, policy and vehicle blocks — and
never the insured's name or address. Every response must validate against the version's
schema, even for an empty or malformed request: where a value as received would break the
schema, a fixed placeholder is echoed instead (the README lists them).
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import NamedTuple
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
_MAX_OFFSET = timedelta(hours=14)
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
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    # Python takes offsets up to ±23:59; xs:dateTime only up to ±14:00 (and the minutes of
    # an offset under 60): echoed, "+14:01" made the answer fail its own schema.
    offset = moment.utcoffset()
    if offset is None:
        return True
    minutes = text[-2:] if text[-3:-2] == ":" else "00"
    return abs(offset) <= _MAX_OFFSET and int(minutes) < 60


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


_XSI = "http://www.w3.org/2001/XMLSchema-instance"
# Text as lxml writes it (and as it reads back what it wrote): & < > escaped, CR as a
# character reference.
_PREFIXED = re.compile(r"</?[^\s/>:]*:")  # a tag with a prefix
_DECLARATIONS = re.compile(r'(?:\s+xmlns(?::[^\s=]+)?="[^"]*")*')


def _plain_requestor(requestor: etree._Element, prefix: str, raw: bytes, env_ns: str) -> str | None:
    """``requestor`` written as lxml writes it once moved into an answer envelope that
    declares ``xsi``, the SOAP namespace and ``tns``, its elements under ``prefix`` — or None
    where that takes lxml's namespace reconciliation: an attribute, an element of another
    namespace, or a namespace declared anywhere in the request beyond those three (``raw``,
    the request as received, holds no other ``xmlns`` than those in scope of the requestor).

    lxml writes the requestor with every namespace in scope declared on its start tag, and
    each element with the one prefix bound to IICMVA: in the envelope, which declares them
    all, the declarations go away and that prefix becomes ``prefix``. Text holds no "<" once
    lxml has written it, so every "<" starts a tag.
    """
    in_scope = requestor.nsmap
    if raw.count(b"xmlns") != len(in_scope):
        return None
    own = [p for p, uri in in_scope.items() if uri == IICMVA]
    if len(own) != 1 or not all(uri in (IICMVA, _XSI, env_ns) for uri in in_scope.values()):
        return None
    text = etree.tostring(requestor, encoding="unicode", with_tail=False)
    head_end = text.index(">")
    empty = text[head_end - 1] == "/"
    mine = f"{own[0]}:" if own[0] else ""
    name = f"<{mine}RequestorInformation"
    declarations = text[len(name) : head_end - 1 if empty else head_end]
    inner = text[head_end + 1 :]
    if not text.startswith(name) or not _DECLARATIONS.fullmatch(declarations) or '="' in inner:
        return None  # an attribute (lxml writes each as name="value")
    # Any other prefix is bound to the SOAP or XSI namespace: an element of another namespace.
    # A prefix needs a ":", which the usual requestor block does not hold at all.
    if ":" in inner and _PREFIXED.search(
        inner.replace(f"<{mine}", "<").replace(f"</{mine}", "</") if mine else inner
    ):
        return None
    head = f"<{prefix}RequestorInformation{'/' if empty else ''}>"
    if mine:
        return head + inner.replace(f"<{mine}", f"<{prefix}").replace(f"</{mine}", f"</{prefix}")
    return head + inner.replace("<", f"<{prefix}").replace(f"<{prefix}/", f"</{prefix}")


def _value_text(value: str) -> str:
    """A value as lxml writes it after reading it from our escaped text (a CR read from
    text is a line end: XML reads CR and CR LF as LF)."""
    if "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if "&" in value or "<" in value or ">" in value:
        return escape(value)
    return value


class Response(NamedTuple):
    """One response element, written on demand: as a standalone element (default namespace),
    or as text the way it reads inside Spyne's answer envelope (``tns:`` prefix). A tuple:
    one is made per request, and a frozen dataclass cost several times as much to build."""

    request: etree._Element | None
    version: str
    reason_codes: tuple[Code, ...]
    found: dict[str, etree._Element]
    echo_requestor: bool = True

    def element(self) -> etree._Element:
        """Assembled as text and parsed once: for a document this small that is several
        times cheaper than creating each element through the lxml API."""
        requestor = self._requestor()
        echo = (
            ""
            if requestor is None
            else etree.tostring(requestor, encoding="unicode", with_tail=False)
        )
        root = etree.fromstring(self._render("", f' xmlns="{IICMVA}"', echo), _PARSER)
        if requestor is not None:
            # lxml wrote the echo with every namespace in scope in the request declared on it.
            # Unused, they must go: in an envelope binding one of their prefixes otherwise
            # (``tns``), lxml would write the echo under that prefix, in the other namespace.
            etree.cleanup_namespaces(root)
        return root

    def enveloped(self, raw: bytes, env_ns: str) -> str | None:
        """The text inside the Body of Spyne's answer envelope for SOAP ``env_ns`` (None where
        the requestor echo needs lxml's namespace handling; ``raw``: the request as received)."""
        requestor = self._requestor()
        echo = ""
        if requestor is not None:
            plain = _plain_requestor(requestor, "tns:", raw, env_ns)
            if plain is None:
                return None
            echo = plain
        return self._render("tns:", "", echo)

    def _requestor(self) -> etree._Element | None:
        requestor = self.found.get("RequestorInformation")
        if self.echo_requestor and requestor is not None and requestor.getparent() is self.request:
            return requestor
        return None

    def _render(self, p: str, declaration: str, requestor: str) -> str:
        version = self.version
        spec = SPECS[version]
        get = self.found.get
        date_node = get("VerificationDate")
        written_date = _safe_date(None if date_node is None else (date_node.text or ""))
        root = p + spec.response_root
        key = spec.key_element
        parts = [
            f"<{root}{declaration}{_publication_text(self.request, version)}>",
            requestor,
            _status_text(p, version, self.reason_codes),
            _field(p, "NAIC", get("NAIC")),
            f"</{p}OrganizationDetails><{p}PolicyDetails><{p}VerificationDate>"
            f"{_value_text(written_date)}</{p}VerificationDate>",
            _field(p, key, get(key)),
            _field(p, "PolicyState", get("PolicyState")),
            f"</{p}PolicyDetails></{p}PolicyInformation>",
        ]
        if get("VehicleInformation") is not None:
            parts.append(f"<{p}VehicleInformation><{p}VehicleDetails>")
            parts.append(_field(p, "VIN", get("VIN")))
            for name in ("Make", "Model", "Year"):
                node = get(name)
                if node is not None and not normalize.is_blank(node.text or ""):
                    parts.append(_field(p, name, node))
                elif version == V0510:
                    # The 00200510 standard requires the three in a response's vehicle block.
                    parts.append(f"<{p}{name}>{PLACEHOLDERS[name]}</{p}{name}>")
            parts.append(f"</{p}VehicleDetails></{p}VehicleInformation>")
        parts.append(f"</{p}Detail></{root}>")
        return "".join(parts)


# A value written as received: nothing to escape, nothing a collapsing schema type would trim.
_TOKEN = re.compile(r"[^\s&<>]+")
# Elements whose value passes as written when it is such a token of a length the schema takes.
_TOKEN_LENGTHS = {
    name: (_MIN_LENGTH.get(name, 1), _MAX_LENGTH[name])
    for name in ("NAIC", "PolicyKey", "UniqueKey", "VIN", "Make", "Model")
}


def _field(p: str, name: str, node: etree._Element | None) -> str:
    """Element ``name`` of the answer, its value echoed from ``node`` (a placeholder where
    the schema would not take the value)."""
    if node is None:
        text = PLACEHOLDERS[name]
    else:
        value = node.text or ""
        bounds = _TOKEN_LENGTHS.get(name)
        if (
            bounds is not None
            and bounds[0] <= len(value) <= bounds[1]
            # Letters and digits only (the usual value) hold nothing the expression looks for.
            and (value.isalnum() or _TOKEN.fullmatch(value))
        ):
            text = value  # what _safe and _value_text give for it, without their work
        else:
            text = _value_text(_safe(name, value))
    return f"<{p}{name}>{text}</{p}{name}>"


# Fragments that repeat from answer to answer, written once each: few distinct keys (prefix,
# version, codes; the publication attributes as received, bounded below).
_STATUS_TEXT: dict[tuple[str, str, tuple[Code, ...]], str] = {}
_PUBLICATION_TEXT: dict[tuple[str | None, str | None, str], str] = {}
_DATES: dict[str | None, str] = {}
_CACHE_LIMIT = 1024  # distinct values a cache of what requesters send may hold


def _status_text(p: str, version: str, reason_codes: tuple[Code, ...]) -> str:
    key = (p, version, reason_codes)
    text = _STATUS_TEXT.get(key)
    if text is None:
        status = "Unconfirmed" if reason_codes else "Confirmed"
        codes = "".join(
            f"<{p}UnconfirmedReasonCode>{code}</{p}UnconfirmedReasonCode>"
            for code in iicmva.for_version(list(reason_codes), version)
        )
        text = _STATUS_TEXT[key] = (
            f"<{p}Detail><{p}PolicyInformation><{p}CoverageStatus><{p}ResponseDetails>"
            f"<{p}ResponseCode>{status}</{p}ResponseCode>{codes}"
            f"</{p}ResponseDetails></{p}CoverageStatus><{p}OrganizationDetails>"
        )
    return text


def _publication_text(request: etree._Element | None, version: str) -> str:
    """The response root's publication attributes, as written on its start tag."""
    if request is None:
        key: tuple[str | None, str | None, str] = (None, None, version)
    else:
        key = (request.get("PublicationVersion"), request.get("PublicationDate"), version)
    text = _PUBLICATION_TEXT.get(key)
    if text is None:
        text = "".join(
            f" {attr}={quoteattr(attr_value)}"
            for attr, attr_value in _publication(request, version).items()
        )
        if len(_PUBLICATION_TEXT) >= _CACHE_LIMIT:
            _PUBLICATION_TEXT.clear()
        _PUBLICATION_TEXT[key] = text
    return text


def _safe_date(value: str | None) -> str:
    """``_safe("VerificationDate", value)``, remembered: most requests ask about a few days."""
    text = _DATES.get(value)
    if text is None:
        text = _safe("VerificationDate", value)
        if len(_DATES) >= _CACHE_LIMIT:
            _DATES.clear()
        _DATES[value] = text
    return text


def build(
    request: etree._Element | None,
    version: str,
    reason_codes: tuple[Code, ...],
    *,
    echo_requestor: bool = True,
    found: dict[str, etree._Element] | None = None,
) -> Response:
    """The response to ``request`` (None: nothing readable was received)."""
    if found is None:
        found = elements(request) if request is not None else {}
    return Response(request, version, reason_codes, found, echo_requestor)
