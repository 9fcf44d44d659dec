"""A request with far more attributes or elements than any valid CoverageRequest holds is
judged without the schema: libxml2 reports every surplus node, and a 64 KiB body of such
nodes cost tens of milliseconds per validation, from anyone, before the requester was judged.
The decision order stays SPEC §1's: UREQ for an unauthorized requester, else IDF."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from lxml import etree

from olv.iicmva import SOAP11_ENV
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


def answer(app: SoapApplication, body: bytes, key: str) -> etree._Element:
    environ = {
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
    chunks = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    assert seen == ["200 OK"]
    return etree.fromstring(b"".join(chunks)).find(f"{{{SOAP11_ENV}}}Body")[0]


def attributes(count: int) -> bytes:
    extra = " ".join(f'a{i}="1"' for i in range(count))
    return envelope(request_xml("00200809").replace("<Detail>", f"<Detail {extra}>", 1))


def elements(count: int) -> bytes:
    extra = "<Junk/>" * count
    return envelope(request_xml("00200809").replace("<Detail>", f"<Detail>{extra}", 1))


@pytest.mark.parametrize("body", [attributes(5000), elements(5000)], ids=["attributes", "elements"])
@pytest.mark.parametrize(("key", "code"), [("wrong", "UREQ"), (KEY, "IDF")])
def test_implausible_request_is_judged_without_the_schema(
    app: SoapApplication, monkeypatch: pytest.MonkeyPatch, body: bytes, key: str, code: str
) -> None:
    counting = CountingSchema(app.verifier.schemas["00200809"])
    monkeypatch.setitem(app.verifier.schemas, "00200809", counting)
    element = answer(app, body, key)
    assert codes_of(element) == ("Unconfirmed", [code])
    assert our_schema("00200809").is_valid(element)
    # Only the answer, small and ours, is checked (it echoes a request not checked).
    assert counting.calls == 1


@pytest.mark.parametrize(("key", "code"), [("wrong", "UREQ"), (KEY, "IDF")])
def test_a_few_surplus_attributes_still_get_the_schemas_verdict(
    app: SoapApplication, monkeypatch: pytest.MonkeyPatch, key: str, code: str
) -> None:
    counting = CountingSchema(app.verifier.schemas["00200809"])
    monkeypatch.setitem(app.verifier.schemas, "00200809", counting)
    element = answer(app, attributes(3), key)
    assert codes_of(element) == ("Unconfirmed", [code])
    assert counting.calls == 3  # the request, its patched copy, the answer


def test_a_valid_request_is_unaffected(app: SoapApplication) -> None:
    element = answer(app, envelope(request_xml("00200809")), KEY)
    assert codes_of(element) == ("Confirmed", [])
