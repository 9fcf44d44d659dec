"""A CoverageRequest is answered without Spyne's per-request machinery, byte for byte as
Spyne answers it.

Every request below goes through the application twice: the way it is served (directly) and
through Spyne (``SoapApplication.through_spyne``, the path every other message takes). Status,
headers and body must be identical — over both versions and SOAP versions, every decision
branch, odd requestor echoes (prefixes, foreign namespaces, attributes, escapes), envelope
headers, invalid and unauthorized requests.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from olv.iicmva import IICMVA, SOAP11_ENV, SOAP12_ENV
from service import response
from service.soap_app import SoapApplication
from tests.helpers import data
from tests.helpers.soap import application, request_xml

KEY = "direct-key"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PLAIN_REQUESTOR = (
    "<RequestorInformation>{individual}<Organization><Name>State Police</Name></Organization>"
    "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
)
REQUESTORS = {
    "none": None,
    "plain": PLAIN_REQUESTOR,
    "whitespace-and-escapes": (
        "<RequestorInformation>{individual}\n  <Organization><Name>A &amp; B &lt;c&gt; &#13; \u00e9\u6f22"
        "</Name></Organization>\n  <ReasonDetails><ReasonCode>{reason}</ReasonCode>"
        "<TrackingNumber>T-1</TrackingNumber></ReasonDetails>\n</RequestorInformation>"
    ),
    "foreign-namespace-declared": (
        '<RequestorInformation xmlns:x="urn:other">{individual}<Organization><Name>N</Name>'
        "</Organization><ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails>"
        "</RequestorInformation>"
    ),
    "foreign-element": (
        '<RequestorInformation><x:Extra xmlns:x="urn:other">1</x:Extra><Organization>'
        "<Name>N</Name></Organization><ReasonDetails><ReasonCode>{reason}</ReasonCode>"
        "</ReasonDetails></RequestorInformation>"
    ),
    "attribute": (
        '<RequestorInformation><Organization id="7"><Name>N</Name></Organization>'
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
    "xsi-nil": (
        f'<RequestorInformation xmlns:xsi="{XSI}">{{individual}}<Organization><Name xsi:nil="true"/>'
        "</Organization><ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails>"
        "</RequestorInformation>"
    ),
    # Written by lxml otherwise than they were received.
    "comment": (
        "<RequestorInformation>{individual}<!-- c --><Organization><Name>N</Name></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
    "cdata": (
        "<RequestorInformation>{individual}<Organization><Name><![CDATA[A & <B>]]></Name>"
        "</Organization><ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails>"
        "</RequestorInformation>"
    ),
    "blanks-in-tags": (
        "<RequestorInformation>{individual}<Organization ><Name >N</Name\n></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
    "empty-pair": (
        "<RequestorInformation>{individual}<Organization><Name></Name></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
    "gt-in-text": (
        "<RequestorInformation>{individual}<Organization><Name>a > b</Name></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
    "crlf-and-tabs": (
        "<RequestorInformation>\r\n\t{individual}<Organization><Name>N\tO</Name></Organization>"
        "\r\n<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails>\r\n"
        "</RequestorInformation>"
    ),
    "char-reference": (
        "<RequestorInformation>{individual}<Organization><Name>&#65;&#x42;</Name></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
    "non-ascii": (
        "<RequestorInformation>{individual}<Organization><Name>Jos\u00e9</Name></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
    "name-in-comment": (
        "<RequestorInformation>{individual}<Organization><Name>N</Name></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
        "<!-- </RequestorInformation> -->"
    ),
    "xmlns-in-text": (
        "<RequestorInformation>{individual}<Organization><Name>xmlns</Name></Organization>"
        "<ReasonDetails><ReasonCode>{reason}</ReasonCode></ReasonDetails></RequestorInformation>"
    ),
}
REASON = {"00200809": "ACCV", "00200510": "Accident"}
INDIVIDUAL = {"00200809": "", "00200510": "<Individual/>"}  # required, may be empty, in 00200510


def _requestor(template: str, version: str) -> str:
    return template.format(reason=REASON[version], individual=INDIVIDUAL[version])


def _prefixed(xml: str, prefix: str) -> str:
    """The request with every element of the IICMVA namespace under ``prefix``."""
    import re

    xml = xml.replace(f'xmlns="{IICMVA}"', f'xmlns:{prefix}="{IICMVA}"')
    return re.sub(r"<(/?)(?![a-z]+:)([A-Z]\w*)", rf"<\1{prefix}:\2", xml)


def _envelope(payload: str, soap12: bool, *, style: str = "s", header: str = "") -> bytes:
    ns = SOAP12_ENV if soap12 else SOAP11_ENV
    extra = {
        "s": "",
        "zeep": f' xmlns:xsi="{XSI}" xmlns:unused="urn:unused"',
        "tns-other": ' xmlns:tns="urn:not-iicmva"',
    }[style]
    return (
        f'<s:Envelope xmlns:s="{ns}"{extra}>{header}<s:Body>{payload}</s:Body></s:Envelope>'
    ).encode()


def _cases() -> Iterator[tuple[str, str, bytes, dict[str, str]]]:
    authorized = {"HTTP_X_API_KEY": KEY}
    for version in ("00200809", "00200510"):
        for soap12 in (False, True) if version == "00200809" else (False,):
            for path in (f"/iicmva/{version}", "/iicmva"):
                for name, requestor in REQUESTORS.items():
                    text = _requestor(requestor, version) if requestor else None
                    xml = request_xml(version, requestor=text)
                    yield (
                        f"{version}-{soap12}-{path}-{name}",
                        path,
                        _envelope(xml, soap12),
                        authorized,
                    )
                for name, overrides in {
                    "unknown-key": {"key": "UNKNOWN"},
                    "not-found": {"key": "NOPE-1", "vin": data.VIN_EXPIRED},
                    "naic2": {"naic": "99999"},
                    "missing-vin": {"vin": None},
                    "blank-key": {"key": "  "},
                    "cr-in-vin": {"vin": "1HGCM8263\r3A004352"},
                    "long-vin": {"vin": "V" * 40},
                    "spaced-date": {"day": " 2026-01-01T00:00:00 "},
                    "bad-date": {"day": "yesterday"},
                    "no-vehicle": {"vehicle": False},
                    "bad-publication": {"publication": ("8", "2008-13-45")},
                }.items():
                    xml = request_xml(version, **overrides)  # type: ignore[arg-type]
                    if "cr-in-vin" in name:
                        xml = xml.replace("\r", "&#13;")
                    yield (
                        f"{version}-{soap12}-{path}-{name}",
                        path,
                        _envelope(xml, soap12),
                        authorized,
                    )
                plain = request_xml(version, requestor=_requestor(PLAIN_REQUESTOR, version))
                for prefix in ("ns0", "tns"):
                    body = _envelope(_prefixed(plain, prefix), soap12)
                    yield (f"{version}-{soap12}-{path}-prefix-{prefix}", path, body, authorized)
                for style in ("zeep", "tns-other"):
                    yield (
                        f"{version}-{soap12}-{path}-{style}",
                        path,
                        _envelope(plain, soap12, style=style),
                        authorized,
                    )
                header = (
                    '<s:Header><h:Trace xmlns:h="urn:h" s:mustUnderstand="1">1</h:Trace></s:Header>'
                )
                yield (
                    f"{version}-{soap12}-{path}-header",
                    path,
                    _envelope(plain, soap12, header=header),
                    authorized,
                )
                yield (
                    f"{version}-{soap12}-{path}-unauthorized",
                    path,
                    _envelope(plain, soap12),
                    {},
                )


CASES = list(_cases())


@pytest.fixture(scope="module")
def app(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoapApplication]:
    with application(module_db_url, tmp_path_factory.mktemp("direct"), KEY) as app:
        yield app


def _environ(path: str, body: bytes, soap12: bool, extra: dict[str, str]) -> dict[str, Any]:
    ctype = "application/soap+xml; charset=utf-8" if soap12 else "text/xml; charset=utf-8"
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_TYPE": ctype,
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "192.0.2.10",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        **extra,
    }


def _served(
    app: SoapApplication, environ: dict[str, Any], spyne: bool
) -> tuple[str, list[Any], bytes]:
    seen: list[Any] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        seen.extend([status, headers])

    early = app.admit(environ, start_response)
    assert early is None, "the case must reach the verification"
    chunks = (
        app.through_spyne(environ, start_response)
        if spyne
        else app.respond(environ, start_response)
    )
    return seen[0], seen[1], b"".join(chunks)


@pytest.mark.parametrize(("name", "path", "body", "extra"), CASES, ids=[c[0] for c in CASES])
def test_direct_answer_is_spynes_byte_for_byte(
    app: SoapApplication,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    path: str,
    body: bytes,
    extra: dict[str, str],
) -> None:
    soap12 = SOAP12_ENV.encode() in body
    expected = _served(app, _environ(path, body, soap12, extra), spyne=True)
    with monkeypatch.context() as patch:

        def no_spyne(*args: Any) -> Any:
            raise AssertionError("a CoverageRequest went through Spyne")

        patch.setattr(app, "through_spyne", no_spyne)
        direct = _served(app, _environ(path, body, soap12, extra), spyne=False)
    assert direct == expected
    assert expected[0] == "200 OK" and b"ResponseCode>" in expected[2]


def test_plain_requests_are_written_as_text() -> None:
    """The common requests (a requestor in the IICMVA namespace only, as zeep and the state
    portal send them) need no lxml envelope; the others fall back to it."""
    from lxml import etree

    from service.request import elements

    def rendered(body: bytes) -> str | None:
        envelope = etree.fromstring(body)
        request = envelope[0][0]
        answer = response.build(request, "00200809", (), found=elements(request))
        return answer.enveloped(body, SOAP11_ENV)

    plain = request_xml("00200809", requestor=_requestor(PLAIN_REQUESTOR, "00200809"))
    assert rendered(_envelope(plain, False)) is not None

    assert rendered(_envelope(_prefixed(plain, "ns0"), False)) is not None
    assert rendered(_envelope(plain, False, style="zeep")) is None
    foreign = _requestor(REQUESTORS["foreign-element"], "00200809")
    assert rendered(_envelope(request_xml("00200809", requestor=foreign), False)) is None
    # An element under the envelope's own prefix: no declaration of its own to count.
    soap_element = plain.replace("<Organization>", "<s:Extra>1</s:Extra><Organization>")
    assert rendered(_envelope(soap_element, False)) is None
    attribute = plain.replace("<Organization>", '<Organization id="1">')
    assert rendered(_envelope(attribute, False)) is None


def test_a_failing_direct_answer_goes_through_spyne(
    app: SoapApplication, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path never answers worse than Spyne: where it fails, Spyne answers."""
    body = _envelope(request_xml("00200809"), False)
    expected = _served(
        app, _environ("/iicmva/00200809", body, False, {"HTTP_X_API_KEY": KEY}), spyne=True
    )

    def broken(self: response.Response, raw: bytes, env_ns: str) -> str | None:
        raise RuntimeError("broken")

    monkeypatch.setattr(response.Response, "enveloped", broken)
    got = _served(
        app, _environ("/iicmva/00200809", body, False, {"HTTP_X_API_KEY": KEY}), spyne=False
    )
    assert got == expected


@pytest.mark.parametrize("soap12", [False, True])
@pytest.mark.parametrize("prefix", ["tns", "soap11env", "soap12env", "xsi", "xs"])
@pytest.mark.parametrize("key", [KEY, "not-a-key"])
def test_a_prefix_the_answer_uses_rebound_by_the_request_stays_out_of_the_echo(
    app: SoapApplication, soap12: bool, prefix: str, key: str
) -> None:
    """The answer's envelope binds ``tns`` (and the SOAP and XSI prefixes) to its own
    namespaces: a request that binds one of them to another namespace must not carry that
    binding into the echoed requestor, or the echo leaves the IICMVA namespace."""
    from lxml import etree

    from tests.helpers.soap import our_schema

    plain = request_xml("00200809", requestor=_requestor(PLAIN_REQUESTOR, "00200809"))
    body = _envelope(plain, soap12).replace(
        b"Envelope xmlns", f'Envelope xmlns:{prefix}="urn:other" xmlns'.encode(), 1
    )
    assert b'"urn:other"' in body
    status, _, answer = _served(
        app, _environ("/iicmva/00200809", body, soap12, {"HTTP_X_API_KEY": key}), spyne=False
    )
    element = etree.fromstring(answer)[0][0]
    assert our_schema("00200809").is_valid(element), answer.decode()
    echo = element.find(f"{{{IICMVA}}}RequestorInformation")
    assert echo is not None and b"urn:other" not in answer
