"""Namespace URIs used on the wire (one place for all of them)."""

IICMVA = "http://www.iicmva.com/CoverageVerification/"
SOAP11_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENV = "http://www.w3.org/2003/05/soap-envelope"
SOAP_ACTION = "http://www.iicmva.com/VerifyInsurance"


def q(name: str) -> str:
    """Clark notation for an IICMVA element: ``q('NAIC')`` → ``'{…}NAIC'``."""
    return f"{{{IICMVA}}}{name}"
