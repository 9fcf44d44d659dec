"""The SOAP messages the portal sends to insurers and reads back, in either IICMVA version.

Requests are built for the insurer's registered version (00200510: ``UniqueKey``, request
reasons by their 00200510 names; 00200809: ``PolicyKey`` and the publication attributes).
Answers are parsed with the hardened parser (:mod:`olv.xmlsafe`) and must validate against our
XSD of that version (zeep cannot read some valid 00200809 answers, SPEC §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from lxml import etree

import xsd
from olv import iicmva, normalize, xmlsafe
from olv.errors import OlvError
from olv.iicmva import IICMVA, SOAP11_ENV, SOAP12_ENV, V0510, V0809, q

MAX_ANSWER_BYTES = 256 * 1024
_RESPONSE_ROOT = {V0510: "CoverageResponse", V0809: "CoverageResponseDocument"}
_KEY = {V0510: "UniqueKey", V0809: "PolicyKey"}


@dataclass(frozen=True)
class Ask:
    """One question to one insurer."""

    naic: str
    policy_key: str  # as on file or on the card (sent normalized); "UNKNOWN" for a VIN-only search
    vin: str
    day: date
    reason: str  # 00200809 request reason (ACC … VIOL)
    state: str  # PolicyState
    requestor: str


@dataclass(frozen=True)
class Answer:
    """What a schema-valid answer said; ``codes`` are the wire values (names or numbers)."""

    response_code: str  # Confirmed | Unconfirmed
    codes: tuple[str, ...]


class BadAnswer(OlvError):
    """The insurer's answer is not a usable CoverageResponse (kind: fault | invalid)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# The request is filled into a fixed text rather than built node by node: it is the same
# message every time but for six values, and building it with lxml cost more than the rest of
# the portal's handling of a call. The bytes are those lxml wrote (checked by the tests).
_REQUEST = (
    "<?xml version='1.0' encoding='UTF-8'?>\n"
    f'<soapenv:Envelope xmlns:soapenv="{SOAP11_ENV}"><soapenv:Body>'
    f'<CoverageRequest xmlns="{IICMVA}"{{publication}}><RequestorInformation>{{individual}}'
    "<Organization><Name>{requestor}</Name></Organization>"
    "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    "<Detail><PolicyInformation><OrganizationDetails><NAIC>{naic}</NAIC></OrganizationDetails>"
    "<PolicyDetails><VerificationDate>{day}T00:00:00</VerificationDate>"
    "<{key}>{policy_key}</{key}><PolicyState>{state}</PolicyState></PolicyDetails>"
    "</PolicyInformation><VehicleInformation><VehicleDetails><VIN>{vin}</VIN></VehicleDetails>"
    "</VehicleInformation></Detail></CoverageRequest></soapenv:Body></soapenv:Envelope>"
)
_PUBLICATION = {
    V0510: "",
    V0809: f' PublicationVersion="{V0809}" PublicationDate="{iicmva.PUBLICATION_DATE_0809}"',
}
_INDIVIDUAL = {V0510: "<Individual/>", V0809: ""}  # required (may be empty) in 00200510
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})


def _text(value: str) -> str:
    if normalize.NOT_XML.search(value):  # what lxml refused when it built the request
        raise ValueError(
            "All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control "
            "characters"
        )
    if "&" in value or "<" in value or ">" in value or "\r" in value:
        return value.translate(_ESCAPES)
    # Nothing to escape, nearly always: str.translate with a dict table raises and clears a
    # KeyError inside for each distinct character it leaves alone (1 µs a value).
    return value


def build_request(ask: Ask, version: str) -> bytes:
    """A SOAP 1.1 envelope holding a CoverageRequest of ``version``.

    The policy key goes out without non-alphanumeric characters and upper-cased, however it
    was typed, read off a card or written in the book of business (SPEC §5 step 5: Idaho never
    sends them, and insurers compare keys that way).
    """
    reason = ask.reason if version == V0809 else iicmva.REQUEST_REASON_0510[ask.reason]
    return _REQUEST.format(
        publication=_PUBLICATION[version],
        individual=_INDIVIDUAL[version],
        requestor=_text(ask.requestor),
        reason=_text(reason),
        naic=_text(ask.naic),
        day=ask.day.isoformat(),
        key=_KEY[version],
        policy_key=_text(normalize.policy_key(ask.policy_key)),
        state=_text(ask.state),
        vin=_text(ask.vin),
    ).encode()


# A Confirmed answer may carry an empty or "0" UnconfirmedReasonCode (Idaho guide, "Response
# to Query"; SPEC §5 step 5): neither is in either schema's code list. Such a code is checked
# as if it were a listed one (so its place and the count limit still hold), then dropped.
_IDAHO_CONFIRMED_CODES = ("", "0")
_STAND_IN = {V0510: "1", V0809: "IDF"}


def _idaho_blank_codes(document: etree._Element) -> list[etree._Element]:
    """The empty or ``0`` reason codes of a ``Confirmed`` answer (none for any other)."""
    details = document.find(f".//{q('ResponseDetails')}")
    if details is None or (details.findtext(q("ResponseCode")) or "").strip() != "Confirmed":
        return []
    return [
        e
        for e in details.findall(q("UnconfirmedReasonCode"))
        if len(e) == 0 and (e.text or "").strip() in _IDAHO_CONFIRMED_CODES
    ]


def _valid(document: etree._Element, version: str) -> bool:
    """Valid against our XSD of ``version``, tolerating Idaho's blank codes (removed in place
    when that is what made the difference). Anything else the schema refuses stays refused."""
    schema = xsd.load_schema(version)
    if schema.validate(document):
        return True
    blank = _idaho_blank_codes(document)
    for element in blank:
        element.text = _STAND_IN[version]
    if not blank or not schema.validate(document):
        return False
    for element in blank:
        parent = element.getparent()
        assert parent is not None  # found under ResponseDetails
        parent.remove(element)
    return True


def parse_answer(content: bytes, version: str, asked: Ask | None = None) -> Answer:
    """The answer in ``content`` (a SOAP 1.1 or 1.2 envelope); raises :class:`BadAnswer`.

    With ``asked``, an answer that echoes another vehicle or insurer than the one asked is not
    an answer to this question (see :func:`_check_echo`)."""
    if len(content) > MAX_ANSWER_BYTES:
        raise BadAnswer("invalid", f"answer larger than {MAX_ANSWER_BYTES} bytes")
    try:
        root = xmlsafe.parse(content)
    except xmlsafe.UnsafeXMLError as exc:
        raise BadAnswer("invalid", str(exc)) from None
    tags = _ENVELOPE_TAGS.get(root.tag)
    if tags is None:
        raise BadAnswer("invalid", "not a SOAP envelope")
    body_tag, fault_tag = tags
    # lxml's C iterators rather than ElementPath: an answer is read hundreds of times a second.
    body = next(root.iterchildren(body_tag), None)
    if body is None or len(body) == 0:
        raise BadAnswer("invalid", "SOAP envelope without a body")
    payload = body[0]
    if payload.tag == fault_tag:
        raise BadAnswer("fault", "SOAP fault")
    if payload.tag != _ROOT_TAG[version]:
        raise BadAnswer("invalid", f"expected {_RESPONSE_ROOT[version]} of version {version}")
    # lxml validates an element as the root of a document of its own (the schema knows
    # nothing of the envelope), in place: no copy written and read back.
    document = payload
    if not _valid(document, version):
        raise BadAnswer("invalid", f"answer does not validate against the {version} schema")
    details = next(document.iter(_DETAILS), None)
    if details is None:  # unreachable for a schema-valid answer; kept as a guard
        raise BadAnswer("invalid", "no ResponseDetails")
    if asked is not None:
        _check_echo(document, asked)
    code = next(details.iterchildren(_CODE), None)
    reasons = tuple((e.text or "").strip() for e in details.iterchildren(_REASON))
    return Answer("" if code is None else (code.text or "").strip(), reasons)


def _check_echo(document: etree._Element, asked: Ask) -> None:
    """Refuse an answer whose echo names another VIN or NAIC than was asked: a Confirmed for
    another vehicle, or from another insurer's books, must never be shown as this one's.

    Only what the answer echoes is compared (the vehicle block is optional in both versions).
    The policy key is not: an insurer may echo the policy it found for an ``UNKNOWN`` search,
    or its own spelling of the key; the VIN and NAIC already say which vehicle and insurer the
    answer is about. The message names the field, never its value (it is logged)."""
    for element in document.iter(_VIN, _NAIC):
        text = element.text or ""
        if element.tag == _VIN:
            same = normalize.vin(text) == normalize.vin(asked.vin)
        else:
            same = text.strip() == asked.naic.strip()
        if not same:
            name = etree.QName(element).localname
            raise BadAnswer("invalid", f"the answer's {name} is not the one asked")


_ENVELOPE_TAGS = {
    f"{{{env}}}Envelope": (f"{{{env}}}Body", f"{{{env}}}Fault") for env in (SOAP11_ENV, SOAP12_ENV)
}
_ROOT_TAG = {version: q(name) for version, name in _RESPONSE_ROOT.items()}
_DETAILS, _CODE, _REASON = q("ResponseDetails"), q("ResponseCode"), q("UnconfirmedReasonCode")
_VIN, _NAIC = q("VIN"), q("NAIC")
