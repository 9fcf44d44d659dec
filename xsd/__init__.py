"""The project's own IICMVA XSD and WSDL files, found through the installed package.

Each version directory holds ``CoverageVerification.xsd`` (the payload schema, the single
source of truth) and ``VerifyService.wsdl`` (a skeleton with empty ``wsdl:types`` and a
placeholder address). :func:`render_wsdl` joins the two into the WSDL that is served.
"""

from __future__ import annotations

import functools
from pathlib import Path
from xml.sax.saxutils import escape

from lxml import etree

from olv.iicmva import IICMVA as PAYLOAD_NS
from olv.iicmva import VERSIONS

__all__ = [
    "LOCATION_PLACEHOLDER",
    "PAYLOAD_NS",
    "VERSIONS",
    "load_schema",
    "render_wsdl",
    "schema_path",
    "wsdl_path",
]

HERE = Path(__file__).parent
LOCATION_PLACEHOLDER = "http://localhost/OLV_LOCATION"

_XS_NS = "http://www.w3.org/2001/XMLSchema"
_WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
_ADDRESS_TAGS = (
    "{http://schemas.xmlsoap.org/wsdl/soap/}address",
    "{http://schemas.xmlsoap.org/wsdl/soap12/}address",
)


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"unknown IICMVA version {version!r}; expected one of {VERSIONS}")


def schema_path(version: str) -> Path:
    return HERE / f"iicmva_{version}" / "CoverageVerification.xsd"


def wsdl_path(version: str) -> Path:
    return HERE / f"iicmva_{version}" / "VerifyService.wsdl"


def _parse_packaged(path: Path) -> etree._ElementTree:
    # Our own files, but parse them the same hardened way as everything else.
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_blank_text=True
    )
    return etree.parse(str(path), parser)


@functools.cache
def load_schema(version: str) -> etree.XMLSchema:
    """The compiled payload schema of ``version``, built once per process.

    lxml validates each call in its own libxml2 context, so the True/False result is safe to
    use from several threads. ``error_log`` is one object per schema, though, and holds the
    latest call of any thread: where the messages matter under threads, compile a private
    schema from :func:`schema_path` instead.
    """
    _check_version(version)
    return etree.XMLSchema(_parse_packaged(schema_path(version)))


@functools.lru_cache(maxsize=64)
def render_wsdl(version: str, location: str) -> bytes:
    """The WSDL served for ``version``: skeleton + our schema inline + ``location`` as address.

    ``location`` may come from request headers (the Host), so the cache stays bounded and a
    miss costs one string join, not a parse: the document is built once per version.
    """
    if any(not ch.isprintable() for ch in location):
        raise ValueError("a WSDL location must not contain control characters")
    escaped = escape(location, {'"': "&quot;"}).encode()
    return escaped.join(_around_location(version))


@functools.cache
def _around_location(version: str) -> tuple[bytes, ...]:
    """The rendered WSDL of ``version`` cut at each address location (once per version)."""
    _check_version(version)
    wsdl = _parse_packaged(wsdl_path(version)).getroot()
    schema = _parse_packaged(schema_path(version)).getroot()
    if schema.tag != f"{{{_XS_NS}}}schema":
        raise ValueError(f"{schema_path(version)} is not an XML Schema")

    types = wsdl.find(f"{{{_WSDL_NS}}}types")
    if types is None or len(types):
        raise ValueError(f"{wsdl_path(version)} must contain an empty wsdl:types element")
    # Re-create the schema element with all its namespace declarations: moving it would make
    # lxml drop those also declared on the WSDL root, and prefixes used only inside QName
    # values (type="cv:...") must stay declared on the schema for tools that extract it alone.
    inline = etree.SubElement(types, schema.tag, dict(schema.attrib), nsmap=schema.nsmap)
    inline.extend(list(schema))

    addresses = [el for tag in _ADDRESS_TAGS for el in wsdl.iter(tag)]
    if not addresses:
        raise ValueError(f"{wsdl_path(version)} has no SOAP address to fill in")
    for address in addresses:
        address.set("location", LOCATION_PLACEHOLDER)

    text = etree.tostring(wsdl, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    parts = text.split(LOCATION_PLACEHOLDER.encode())
    if len(parts) != len(addresses) + 1:
        raise ValueError(f"{wsdl_path(version)} holds the location placeholder elsewhere")
    return tuple(parts)
