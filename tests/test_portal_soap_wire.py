"""The portal's SOAP requests validate against our XSD of the insurer's version; answers are
read only when they validate."""

from __future__ import annotations

from datetime import date

import pytest
from lxml import etree

import xsd
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
        assert "<UniqueKey>P-1</UniqueKey>" in text and "TrafficViolationwithAccident" in text
        assert "PublicationVersion" not in text
    else:
        assert "<PolicyKey>P-1</PolicyKey>" in text and "<ReasonCode>ACCV</ReasonCode>" in text
        assert 'PublicationVersion="00200809"' in text


@pytest.mark.parametrize("version", [V0510, V0809])
def test_request_text_is_escaped(version: str) -> None:
    """Values are written as text, whatever they hold (a policy number off a card)."""
    key = "A&B <C> \"D\" 'E' \r\t é€𝄞"
    ask = Ask("10001", key, "VIN&<1>", date(2026, 11, 2), "VIOL", "ID", "Tom & Jerry <Co>")
    envelope = etree.fromstring(build_request(ask, version))
    tag = "UniqueKey" if version == V0510 else "PolicyKey"
    found = {e.tag.rsplit("}", 1)[1]: e.text for e in envelope.iter() if e.text}
    assert found[tag] == key
    assert found["VIN"] == "VIN&<1>" and found["Name"] == "Tom & Jerry <Co>"


def test_request_refuses_what_xml_cannot_hold() -> None:
    ask = Ask("10001", "P\x01", "VIN1", date(2026, 11, 2), "VIOL", "ID", "State portal")
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
