"""The portal's SOAP requests validate against our XSD of the insurer's version; answers are
read only when they validate."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

import xsd
from olv import normalize
from olv.iicmva import SOAP11_ENV, V0510, V0809
from portal.soap_wire import Ask, BadAnswer, build_request, parse_answer
from tests.helpers.portal import answer, fault

ASK = Ask("10001", "P-1", "1HGCM82633A004352", date(2026, 11, 2), "ACCV", "ID", "State portal")


@pytest.mark.parametrize("version", [V0510, V0809])
def test_request_validates_against_our_schema(version: str) -> None:
    envelope = etree.fromstring(build_request(ASK, version))
    payload = envelope.find(f"{{{SOAP11_ENV}}}Body")[0]
    document = etree.fromstring(etree.tostring(payload))
    schema = xsd.load_schema(version)
    assert schema.validate(document), schema.error_log
    text = etree.tostring(document).decode()
    if version == V0510:
        assert "<UniqueKey>P1</UniqueKey>" in text and "TrafficViolationwithAccident" in text
        assert "PublicationVersion" not in text
    else:
        assert "<PolicyKey>P1</PolicyKey>" in text and "<ReasonCode>ACCV</ReasonCode>" in text
        assert 'PublicationVersion="00200809"' in text


@pytest.mark.parametrize("version", [V0510, V0809])
def test_request_text_is_escaped(version: str) -> None:
    """Values are written as text, whatever they hold (a VIN or requestor name)."""
    ask = Ask("10001", "P-1", "VIN&<1>\r\t é€𝄞", date(2026, 11, 2), "VIOL", "ID", "Tom & <Co>")
    envelope = etree.fromstring(build_request(ask, version))
    found = {e.tag.rsplit("}", 1)[1]: e.text for e in envelope.iter() if e.text}
    assert found["VIN"] == "VIN&<1>\r\t é€𝄞" and found["Name"] == "Tom & <Co>"


# Mostly plain text, with each character the request must escape on its own now and then.
_VALUE = st.text(alphabet=st.sampled_from("AZ09 -.&<>\r\t\n'\"é"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(vin=_VALUE, requestor=_VALUE)
def test_any_text_comes_back_from_the_request_as_it_was_given(vin: str, requestor: str) -> None:
    assert not normalize.NOT_XML.search(vin + requestor)
    ask = Ask("10001", "P1", vin, date(2026, 11, 2), "VIOL", "ID", requestor)
    envelope = etree.fromstring(build_request(ask, V0809))
    found = {e.tag.rsplit("}", 1)[1]: e.text for e in envelope.iter() if e.text}
    assert (found.get("VIN"), found.get("Name")) == (vin, requestor)


@pytest.mark.parametrize("version", [V0510, V0809])
@pytest.mark.parametrize(
    ("key", "sent"),
    [("abc-12 3", "ABC123"), ("A&B <C> \"D\" 'E' \r\t é€𝄞_9", "ABCDE9"), ("unknown", "UNKNOWN")],
)
def test_policy_key_is_sent_without_punctuation_and_upper_cased(
    version: str, key: str, sent: str
) -> None:
    """Idaho: "Non-alphanumeric characters will not be submitted … as part of the policy
    number" (SPEC §5 step 5)."""
    ask = Ask("10001", key, "VIN1", date(2026, 11, 2), "VIOL", "ID", "State portal")
    envelope = etree.fromstring(build_request(ask, version))
    tag = "UniqueKey" if version == V0510 else "PolicyKey"
    found = {e.tag.rsplit("}", 1)[1]: e.text for e in envelope.iter() if e.text}
    assert found[tag] == sent


def test_request_refuses_what_xml_cannot_hold() -> None:
    ask = Ask("10001", "P1", "VIN\x01", date(2026, 11, 2), "VIOL", "ID", "State portal")
    with pytest.raises(ValueError, match="XML compatible"):
        build_request(ask, V0809)


@pytest.mark.parametrize("version", [V0510, V0809])
def test_valid_answer_is_read(version: str) -> None:
    codes = ("7", "10") if version == V0510 else ("PKEY2", "VIN1")
    parsed = parse_answer(answer(version, "Unconfirmed", codes), version)
    assert (parsed.response_code, parsed.codes) == ("Unconfirmed", codes)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (fault(), "fault"),
        (b"not xml", "invalid"),
        (answer(V0510, "Confirmed"), "invalid"),  # the other version's root
        (answer(V0809, "Maybe"), "invalid"),  # schema-invalid code
        (b'<!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>', "invalid"),
        (b"<a>" + b"x" * 300_000 + b"</a>", "invalid"),
    ],
    ids=["fault", "not-xml", "wrong-root", "bad-code", "dtd", "too-large"],
)
def test_unusable_answers_are_refused(content: bytes, kind: str) -> None:
    with pytest.raises(BadAnswer) as caught:
        parse_answer(content, V0809)
    assert caught.value.kind == kind


def _confirmed_with(version: str, *codes: str) -> bytes:
    """A Confirmed answer carrying ``codes`` as UnconfirmedReasonCode elements, whatever they
    are (the helper writes them as given; ``<empty/>`` writes an empty element)."""
    content = answer(version, "Confirmed").decode()
    elements = "".join(
        "<UnconfirmedReasonCode/>"
        if c == "<empty/>"
        else f"<UnconfirmedReasonCode>{c}</UnconfirmedReasonCode>"
        for c in codes
    )
    return content.replace("</ResponseCode>", "</ResponseCode>" + elements, 1).encode()


@pytest.mark.parametrize("version", [V0510, V0809])
@pytest.mark.parametrize("codes", [("0",), ("",), ("<empty/>",), (" 0 ",), ("0", "")])
def test_confirmed_with_an_empty_or_zero_reason_code_is_confirmed(
    version: str, codes: tuple[str, ...]
) -> None:
    """Idaho guide, "Response to Query": with Confirmed "an empty string or '0' may be
    included" (SPEC §5 step 5)."""
    parsed = parse_answer(_confirmed_with(version, *codes), version)
    assert (parsed.response_code, parsed.codes) == ("Confirmed", ())


@pytest.mark.parametrize("version", [V0510, V0809])
@pytest.mark.parametrize(
    "content",
    [
        lambda v: answer(v, "Unconfirmed", ("0",)),  # only Confirmed may carry it
        lambda v: answer(v, "Unconfirmed", ("",)),
        lambda v: _confirmed_with(v, "00"),
        lambda v: _confirmed_with(v, "zero"),
        lambda v: _confirmed_with(v, "0", "0", "0", "0", "0", "0"),  # six: over the 5 allowed
        lambda v: _confirmed_with(v, "0").replace(b"<VerificationDate>", b"<VerificationDate>x"),
        lambda v: _confirmed_with(v, "0").replace(
            b"</ResponseDetails>", b"<Extra/></ResponseDetails>"
        ),
    ],
    ids=["unconfirmed-0", "unconfirmed-empty", "00", "word", "six", "bad-date", "extra"],
)
def test_other_schema_faults_around_a_zero_code_stay_refused(version: str, content) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadAnswer) as caught:
        parse_answer(content(version), version)
    assert caught.value.kind == "invalid"
