"""A request with far more attributes or elements than any valid CoverageRequest holds is
judged without the schema: libxml2 reports every surplus node, and a 64 KiB body of such
nodes cost tens of milliseconds per validation, from anyone, before the requester was judged.
The decision order stays SPEC §1's: UREQ for an unauthorized requester, else IDF."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from olv import xmlsafe
from olv.iicmva import SOAP11_ENV
from service.request import _IMPLAUSIBLE, within_bounds
from service.request import elements as elements_read
from service.soap_app import SoapApplication
from tests.helpers.soap import application, codes_of, envelope, our_schema, request_xml

KEY = "implausible-key"


class CountingSchema:
    """A schema that counts its validations."""

    def __init__(self, schema: etree.XMLSchema) -> None:
        self.schema, self.calls = schema, 0

    def validate(self, element: etree._Element) -> bool:
        self.calls += 1
        return bool(self.schema.validate(element))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.schema, name)


@pytest.fixture(scope="module")
def app(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoapApplication]:
    with application(module_db_url, tmp_path_factory.mktemp("implausible"), KEY) as app:
        yield app


def answer(app: SoapApplication, body: bytes, key: str, settled: bool = False) -> etree._Element:
    """The answer as plain WSGI gives it, or ``settled`` as the server gives it (the request
    read and decided on the event loop first)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/iicmva/00200809",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "text/xml; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_ADDR": "192.0.2.10",
        "SERVER_NAME": "soap.test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "HTTP_X_API_KEY": key,
    }
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        seen.append(status)

    if settled:
        assert app.admit(environ, start_response) is None
        asyncio.run(app.settle(environ))
        chunks = app.respond(environ, start_response)
    else:
        chunks = app(environ, start_response)
    assert seen == ["200 OK"]
    return etree.fromstring(b"".join(chunks)).find(f"{{{SOAP11_ENV}}}Body")[0]


def attributes(count: int) -> bytes:
    extra = " ".join(f'a{i}="1"' for i in range(count))
    return envelope(request_xml("00200809").replace("<Detail>", f"<Detail {extra}>", 1))


def elements(count: int) -> bytes:
    extra = "<Junk/>" * count
    return envelope(request_xml("00200809").replace("<Detail>", f"<Detail>{extra}", 1))


@pytest.mark.parametrize("settled", [False, True], ids=["wsgi", "settled"])
@pytest.mark.parametrize("body", [attributes(5000), elements(5000)], ids=["attributes", "elements"])
@pytest.mark.parametrize(("key", "code"), [("wrong", "UREQ"), (KEY, "IDF")])
def test_implausible_request_is_judged_without_the_schema(
    app: SoapApplication,
    monkeypatch: pytest.MonkeyPatch,
    body: bytes,
    key: str,
    code: str,
    settled: bool,
) -> None:
    counting = CountingSchema(app.verifier.schemas["00200809"])
    monkeypatch.setitem(app.verifier.schemas, "00200809", counting)
    element = answer(app, body, key, settled)
    assert codes_of(element) == ("Unconfirmed", [code])
    assert our_schema("00200809").is_valid(element)
    # Only the answer, small and ours, is checked (it echoes a request not checked).
    assert counting.calls == 1


@pytest.mark.parametrize("settled", [False, True], ids=["wsgi", "settled"])
@pytest.mark.parametrize(("key", "code"), [("wrong", "UREQ"), (KEY, "IDF")])
def test_a_few_surplus_attributes_still_get_the_schemas_verdict(
    app: SoapApplication, monkeypatch: pytest.MonkeyPatch, key: str, code: str, settled: bool
) -> None:
    counting = CountingSchema(app.verifier.schemas["00200809"])
    monkeypatch.setitem(app.verifier.schemas, "00200809", counting)
    element = answer(app, attributes(3), key, settled)
    assert codes_of(element) == ("Unconfirmed", [code])
    assert counting.calls == 3  # the request, its patched copy, the answer


def test_a_valid_request_is_unaffected(app: SoapApplication) -> None:
    element = answer(app, envelope(request_xml("00200809")), KEY)
    assert codes_of(element) == ("Confirmed", [])


@pytest.mark.parametrize("settled", [False, True], ids=["wsgi", "settled"])
def test_just_past_the_bounds_is_still_refused(app: SoapApplication, settled: bool) -> None:
    # One attribute or element more than the bounds allow, with no other "=" or "<" to spare.
    for body in (attributes(65), elements(1001)):
        assert codes_of(answer(app, body, KEY, settled)) == ("Unconfirmed", ["IDF"])


# What a parsed document cannot hold more of than its text shows: comments, CDATA, character
# references and "=" in text and values only make the count from the text larger; "<e/>",
# the shortest element, packs the most elements into a body of a given length.
_PIECES = st.sampled_from(
    [
        "<e/>",
        '<e a="1"/>',
        "<e>x=y</e>",
        "<!-- <e/> -->",
        "<![CDATA[<e a='1'/>]]>",
        "&#60;e/&#62;",
        "t",
    ]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_PIECES, max_size=1200), attributes=st.integers(0, 70))
def test_the_bounds_from_the_text_are_never_short_of_the_parsed_counts(
    pieces: list[str], attributes: int
) -> None:
    extra = " ".join(f'a{i}="v"' for i in range(attributes))
    raw = f"<r {extra}>{''.join(pieces)}</r>".encode()
    parsed = xmlsafe.parse(raw)
    if within_bounds(raw):
        assert not _IMPLAUSIBLE(parsed)
    # And the bound is not so loose that the usual request falls outside it.
    assert within_bounds(envelope(request_xml("00200809")))


def test_the_densest_bodies_around_the_element_bound_are_judged_by_their_counts() -> None:
    """Bodies made only of the shortest elements, around the bound: one short enough that
    its "<" go uncounted never holds more elements than allowed."""
    judged = []
    for count in range(990, 1010):
        raw = b"<r>" + b"<e/>" * (count - 1) + b"</r>"
        judged.append(within_bounds(raw))
        if judged[-1]:
            assert not _IMPLAUSIBLE(xmlsafe.parse(raw)), count
    assert True in judged and False in judged


# Elements of the request, some of the names read and some not, in either namespace, nested.
_NAMES = st.sampled_from(["NAIC", "VIN", "Make", "Year", "VehicleInformation", "Other"])
_TREES = st.recursive(
    st.tuples(st.booleans(), _NAMES, st.just([])),
    lambda children: st.tuples(st.booleans(), _NAMES, st.lists(children, max_size=4)),
    max_leaves=30,
)


def _xml(tree: tuple[bool, str, list[Any]]) -> str:
    ours, name, children = tree
    namespace = "" if ours else ' xmlns="urn:elsewhere"'
    inner = "".join(_xml(child) for child in children) or "v"
    return f"<{name}{namespace}>{inner}</{name}>"


@settings(max_examples=300, deadline=None)
@given(trees=st.lists(_TREES, max_size=6))
def test_both_ways_of_finding_the_elements_read_find_the_same(
    trees: list[tuple[bool, str, list[Any]]],
) -> None:
    """Bounded or not, each name read is found at its first element in document order, in
    the request's namespace only."""
    raw = request_xml("00200809").replace("<Detail>", "<Detail>" + "".join(map(_xml, trees)), 1)
    request = xmlsafe.parse(raw.encode())
    walked, asked = elements_read(request, bounded=True), elements_read(request)
    assert walked.keys() == asked.keys()
    assert all(walked[name] is asked[name] for name in walked)
