"""Hardened XML parsing: no DTD, no entity expansion, no network, bounded size.

Every XML document that reaches OLV from outside goes through :func:`parse`.
"""

from __future__ import annotations

from lxml import etree

from olv.errors import OlvError


class UnsafeXMLError(OlvError):
    """The document is not well-formed or uses a construct OLV refuses (DTD, entities)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def make_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


_PARSER = make_parser()


def parse(data: bytes) -> etree._Element:
    """Parse ``data`` or raise :class:`UnsafeXMLError`; a DOCTYPE is refused outright."""
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise UnsafeXMLError(f"not well-formed XML: {exc.msg}", exc.lineno) from None
    if root is None:
        raise UnsafeXMLError("empty document")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnsafeXMLError("DTDs and entity declarations are not accepted")
    return root
