"""The WSGI application: routing, size cap, hardened parsing, WSDL, SOAP 1.1/1.2 via Spyne.

Spyne defines the service (its one operation, SOAP 1.1 and 1.2 bindings, faults); the body
stays a bare XML element (``AnyXml``) so the wire contract is the IICMVA schema in ``xsd/``
rather than anything generated from Python models. Our own WSDL is served for ``?wsdl``;
Spyne's generated one is never exposed.

A request whose Body holds a ``CoverageRequest`` — the one message Spyne would dispatch to
``VerifyInsurance`` — is answered directly: the same verifier call, the answer put in the
envelope Spyne writes, byte for byte (``tests/test_service_direct_path.py`` holds the two
ways equal). Spyne's per-request machinery (method context, a dozen events, serializing a
placeholder it then throws away) cost more CPU than the verification itself. Everything else
(another message, a call that fails) goes through Spyne as before.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from lxml import etree
from spyne import AnyXml, Application, Fault, ServiceBase, rpc
from spyne import const as spyne_const
from spyne.protocol.soap import Soap11, Soap12
from spyne.protocol.xml import XmlDocument
from spyne.server.wsgi import WsgiApplication

import xsd
from olv import xmlsafe
from olv.config import Settings, get_settings
from olv.forwarding import forwarded_scheme
from olv.iicmva import IICMVA, SOAP11_ENV, SOAP12_ENV
from service.auth import Identities
from service.request import within_bounds
from service.verifier import ENDPOINTS, Verifier
from service.versions import DEFAULT_VERSION, SPECS

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
_OUT = "olv.response"
_ENVELOPE = "olv.envelope"
_RAW = "olv.raw"
_SOAP12 = "olv.soap12"  # whether the envelope is SOAP 1.2's
_FIRST = "olv.first"  # the Body's first element, found by settle (None: an empty Body)
SETTLED = "olv.settled"  # the settled decision (read by service.metrics too)
ARRIVED = "olv.arrived"  # set by the server: when the request arrived (time.monotonic())
BODY = "olv.body"  # set by the ASGI server: the body as received (else read from wsgi.input)
# A DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port.
_REQUEST_TAG = f"{{{IICMVA}}}CoverageRequest"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_HOST = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


class VerifyService(ServiceBase):
    @rpc(
        AnyXml,
        _body_style="bare",
        _in_message_name="CoverageRequest",
        _operation_name="VerifyInsurance",
        _returns=AnyXml,
    )
    def VerifyInsurance(ctx, _detail):  # noqa: N802, N805 - Spyne's naming and ctx-first idiom
        env = ctx.transport.req_env
        verifier: Verifier = env["olv.verifier"]
        env[_OUT] = verifier.answer(
            ctx.in_body_doc,
            env["olv.endpoint"],
            env["olv.requester"],
            env["olv.started"],
            env.get(SETTLED),
        ).element()
        return None


def split(envelope: etree._Element) -> tuple[etree._Element | None, etree._Element | None]:
    """The envelope's first Header and first Body (None when absent), in one pass over its
    children (Spyne compiles two XPaths per request; ``find`` parses its path each time)."""
    env = envelope.tag[: envelope.tag.index("}") + 1]
    header_tag, body_tag = f"{env}Header", f"{env}Body"
    header = body = None
    for child in envelope:
        tag = child.tag
        if tag == body_tag:
            if body is None:
                body = child
        elif tag == header_tag and header is None:
            header = child
    return header, body


def _coverage_request(envelope: etree._Element) -> etree._Element | None:
    """The Body's ``CoverageRequest``, when that is what Spyne would dispatch: the first
    element of the Body, whatever the Header holds (the operation declares no header)."""
    body = split(envelope)[1]
    if body is None or len(body) == 0 or body[0].tag != _REQUEST_TAG:
        return None
    return body[0]


def _put_our_body(ctx: Any) -> None:
    """Replace what Spyne serialized with our schema-exact response element."""
    ours = ctx.transport.req_env.get(_OUT) if ctx.transport is not None else None
    if ours is None or ctx.out_error is not None or ctx.out_body_doc is None:
        return
    body = ctx.out_body_doc
    for child in list(body):
        body.remove(child)
    body.append(ours)


class _Reuse:
    """Mixin: hand Spyne the envelope we already parsed with the hardened parser.

    Spyne would otherwise parse the same bytes again with a parser it builds per request.
    """

    def create_in_document(self, ctx: Any, charset: str | None = None) -> None:
        envelope = ctx.transport.req_env.get(_ENVELOPE) if ctx.transport is not None else None
        if envelope is None:
            super().create_in_document(ctx, charset)  # type: ignore[misc]
            return
        ctx.in_document = (envelope, {})

    def decompose_incoming_envelope(self, ctx: Any, message: Any = XmlDocument.REQUEST) -> None:
        """Split Header and Body with two child look-ups (Spyne compiles two XPaths per
        request) and answer an envelope without a payload with a client fault (Spyne fails
        with an internal error on an empty Body)."""
        envelope, xmlids = ctx.in_document
        if xmlids:  # multi-ref encoded SOAP: leave it to Spyne
            super().decompose_incoming_envelope(ctx, message)  # type: ignore[misc]
            return
        header, body = split(envelope)
        if body is None or len(body) == 0:
            raise Fault("Client.SoapError", "the SOAP Body carries no CoverageRequest")
        ctx.in_document = envelope
        ctx.in_header_doc = list(header) if header is not None else None
        ctx.in_body_doc = body[0]
        ctx.method_request_string = ctx.in_body_doc.tag
        self.validate_body(ctx, message)  # type: ignore[attr-defined]


class OlvSoap11(_Reuse, Soap11):
    pass


class OlvSoap12(_Reuse, Soap12):
    pass


def _no_forced_collections() -> None:
    """Spyne runs a full ``gc.collect()`` at most once a second when a request context closes.
    Under load that is a multi-millisecond pause in the middle of requests; Python's own
    generational collector already reclaims Spyne's context cycles."""
    spyne_const.MIN_GC_INTERVAL = float("inf")


class _Frame:
    """The envelope of an answer as Spyne writes it, for one SOAP version: as lxml elements
    (:meth:`wrap`) and as the text before and after the Body's content."""

    def __init__(self, app: Application) -> None:
        self.protocol = app.out_protocol
        self.env_ns: str = self.protocol.ns_soap_env
        self.mime_type: str = self.protocol.mime_type
        # Spyne's namespace map left with what its own serialization uses (it cleans the
        # others away), in its order.
        used = (_XSI, self.env_ns, IICMVA)
        self.nsmap = {prefix: uri for prefix, uri in app.interface.nsmap.items() if uri in used}
        marker = "<tns:Marker/>"
        text = self.wrap(etree.Element(f"{{{IICMVA}}}Marker")).decode(self.protocol.encoding)
        head, tail = text.split(marker)
        self.head, self.tail = head.encode(), tail.encode()

    def wrap(self, answer: etree._Element) -> bytes:
        envelope = etree.Element(f"{{{self.env_ns}}}Envelope", nsmap=self.nsmap)
        etree.SubElement(envelope, f"{{{self.env_ns}}}Body").append(answer)
        return bytes(
            etree.tostring(
                envelope,
                encoding=self.protocol.encoding,
                pretty_print=self.protocol.pretty_print,
                xml_declaration=self.protocol.xml_declaration,
            )
        )


def _spyne(protocol: type) -> WsgiApplication:
    app = Application(
        [VerifyService],
        tns=IICMVA,
        name="VerifyService",
        in_protocol=protocol(validator=None),
        out_protocol=protocol(),
    )
    app.out_protocol.event_manager.add_listener("after_serialize", _put_our_body)
    return WsgiApplication(app, max_content_length=1 << 30)


def _fault(soap12: bool, code: str, reason: str) -> tuple[str, bytes, str]:
    if soap12:
        env = etree.Element(f"{{{SOAP12_ENV}}}Envelope", nsmap={"env": SOAP12_ENV})
        fault = etree.SubElement(
            etree.SubElement(env, f"{{{SOAP12_ENV}}}Body"), f"{{{SOAP12_ENV}}}Fault"
        )
        value = etree.SubElement(
            etree.SubElement(fault, f"{{{SOAP12_ENV}}}Code"), f"{{{SOAP12_ENV}}}Value"
        )
        value.text = f"env:{code}"
        text = etree.SubElement(
            etree.SubElement(fault, f"{{{SOAP12_ENV}}}Reason"), f"{{{SOAP12_ENV}}}Text"
        )
        text.set("{http://www.w3.org/XML/1998/namespace}lang", "en")
        text.text = reason
        status = "400 Bad Request" if code == "Sender" else "500 Internal Server Error"
        return (
            status,
            etree.tostring(env, xml_declaration=True, encoding="UTF-8"),
            ("application/soap+xml; charset=utf-8"),
        )
    env = etree.Element(f"{{{SOAP11_ENV}}}Envelope", nsmap={"soap": SOAP11_ENV})
    fault = etree.SubElement(
        etree.SubElement(env, f"{{{SOAP11_ENV}}}Body"), f"{{{SOAP11_ENV}}}Fault"
    )
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = reason
    # WS-I Basic Profile: a SOAP 1.1 fault travels with HTTP 500.
    return (
        "500 Internal Server Error",
        etree.tostring(env, xml_declaration=True, encoding="UTF-8"),
        "text/xml; charset=utf-8",
    )


class SoapApplication:
    """The WSGI callable served by ``olv soap serve`` (and mounted by ``olv demo``)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        _no_forced_collections()
        self._soap11 = _spyne(OlvSoap11)
        self._soap12 = _spyne(OlvSoap12)
        self._direct = {False: _Frame(self._soap11.app), True: _Frame(self._soap12.app)}
        self._identify = Identities(self.settings)
        self._verifier: Verifier | None = None
        self._lock = threading.Lock()

    @property
    def verifier(self) -> Verifier:
        # Built on first use so each forked worker opens its own connections and writer.
        if self._verifier is None:
            with self._lock:
                if self._verifier is None:
                    self._verifier = Verifier(self.settings)
        return self._verifier

    def close(self) -> None:
        if self._verifier is not None:
            self._verifier.close()
            self._verifier = None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        early = self.admit(environ, start_response)
        return early if early is not None else self.respond(environ, start_response)

    def admit(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """Everything before the verification: the reply when there is nothing to verify."""
        started = environ.get(ARRIVED) or time.monotonic()
        path = environ.get("PATH_INFO", "").rstrip("/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz":
            return _plain(start_response, "200 OK", b"ok\n")
        if path not in ENDPOINTS:
            return _plain(start_response, "404 Not Found", b"no such endpoint\n")
        endpoint_version = ENDPOINTS[path]
        if method in ("GET", "HEAD"):
            query = {
                k.lower(): v
                for k, v in parse_qs(
                    environ.get("QUERY_STRING", ""), keep_blank_values=True
                ).items()
            }
            if "wsdl" in query:
                version = endpoint_version or query.get("version", [DEFAULT_VERSION])[0]
                if version not in xsd.VERSIONS:
                    return _plain(start_response, "404 Not Found", b"unknown version\n")
                location = _location(environ, path, self.settings)
                body = xsd.render_wsdl(version, location)
                return _reply(start_response, "200 OK", body, "text/xml; charset=utf-8", method)
            return _plain(
                start_response, "405 Method Not Allowed", b"POST a SOAP request, or GET ?wsdl\n"
            )
        if method != "POST":
            return _plain(start_response, "405 Method Not Allowed", b"POST a SOAP request\n")

        soap12_hint = "application/soap+xml" in environ.get("CONTENT_TYPE", "")
        body_or_error = _read_body(environ, self.settings.max_body_bytes)
        if isinstance(body_or_error, str):
            return _plain(start_response, "413 Content Too Large", body_or_error.encode())
        raw = body_or_error
        try:
            envelope = xmlsafe.parse(raw)
        except xmlsafe.UnsafeXMLError as exc:
            return _send_fault(start_response, soap12_hint, "Client", f"bad request: {exc}")
        ns, local = _split_tag(envelope.tag)
        if local != "Envelope" or ns not in (SOAP11_ENV, SOAP12_ENV):
            # SPEC §1: input that is not a CoverageRequest in a SOAP envelope is the client's
            # fault, whatever the root; VersionMismatch stays for a real envelope of the wrong
            # SOAP version on an endpoint that serves only the other one.
            return _send_fault(start_response, soap12_hint, "Client", "not a SOAP envelope")
        soap12 = ns == SOAP12_ENV
        if soap12 and endpoint_version is not None and not SPECS[endpoint_version].soap12:
            return _send_fault(
                start_response,
                False,
                "VersionMismatch",
                f"{endpoint_version} is served over SOAP 1.1 only",
            )

        environ[_RAW] = raw
        environ[_ENVELOPE] = envelope
        environ[_SOAP12] = soap12
        environ["olv.verifier"] = self.verifier
        environ["olv.endpoint"] = endpoint_version
        environ["olv.requester"] = self._identify(environ)
        environ["olv.started"] = started
        return None

    async def settle(self, environ: dict[str, Any]) -> None:
        """Decide ahead of the answer, on the event loop, the database part under the
        deadline."""
        body = split(environ[_ENVELOPE])[1]
        first = environ[_FIRST] = None if body is None or len(body) == 0 else body[0]
        if first is None:
            return  # Spyne answers it with a client fault
        environ[SETTLED] = await self.verifier.settle(
            first,
            environ["olv.endpoint"],
            environ["olv.requester"],
            environ["olv.started"],
            within_bounds(environ[_RAW]),
        )

    def respond(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The answer to a request :meth:`admit` let through: directly for a
        ``CoverageRequest``, else (or when that fails) through Spyne."""
        envelope = environ[_ENVELOPE]
        if _FIRST in environ:  # settled: the Body's first element is known
            request = environ[_FIRST]
            if request is not None and request.tag != _REQUEST_TAG:
                request = None
        else:
            request = _coverage_request(envelope)
        if request is not None:
            soap12 = environ[_SOAP12]
            try:
                payload = self._answer_directly(environ, request, soap12)
            except Exception:  # noqa: BLE001 - Spyne's own path answers it, with its fault
                log.exception("direct answer failed; handing the request to Spyne")
            else:
                ctype = self._direct[soap12].mime_type
                return _reply(start_response, "200 OK", payload, ctype)
        return self.through_spyne(environ, start_response)

    def _answer_directly(
        self, environ: dict[str, Any], request: etree._Element, soap12: bool
    ) -> bytes:
        """What Spyne would send for this request, without Spyne: the verifier's answer
        in the envelope Spyne builds, serialized as Spyne serializes it."""
        answer = self.verifier.answer(
            request,
            environ["olv.endpoint"],
            environ["olv.requester"],
            environ["olv.started"],
            environ.get(SETTLED),
        )
        frame = self._direct[soap12]
        text = answer.enveloped(environ[_RAW], frame.env_ns)
        if text is None:
            return frame.wrap(answer.element())
        return frame.head + text.encode() + frame.tail

    def through_spyne(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        """Spyne's envelope handling around :meth:`Verifier.answer`, after :meth:`admit`."""
        raw = environ[_RAW]
        environ["wsgi.input"] = io.BytesIO(raw)
        environ["CONTENT_LENGTH"] = str(len(raw))
        soap12 = etree.QName(environ[_ENVELOPE]).namespace == SOAP12_ENV
        if soap12 and "application/soap+xml" not in environ.get("CONTENT_TYPE", ""):
            environ["CONTENT_TYPE"] = "application/soap+xml; charset=utf-8"
        target = self._soap12 if soap12 else self._soap11
        try:
            return target(environ, start_response)
        except Exception:  # noqa: BLE001 - the last guard: a fault, never a stack trace
            log.exception("SOAP processing failed")
            return _send_fault(start_response, soap12, "Server", "internal error")


def _split_tag(tag: str) -> tuple[str | None, str]:
    """Namespace and local name of an element's ``{namespace}local`` tag."""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def _send_fault(start_response: StartResponse, soap12: bool, code: str, reason: str) -> list[bytes]:
    if soap12 and code == "Client":
        code = "Sender"
    status, body, ctype = _fault(soap12, code, reason)
    return _reply(start_response, status, body, ctype)


def _read_body(environ: dict[str, Any], cap: int) -> bytes | str:
    length_text = environ.get("CONTENT_LENGTH") or ""
    if length_text:
        try:
            length = int(length_text)
        except ValueError:
            return "bad Content-Length\n"
        if length > cap:
            return f"request body over the {cap}-byte limit\n"
    data = environ.get(BODY)
    if data is None:
        data = environ["wsgi.input"].read(cap + 1)
    if len(data) > cap:
        return f"request body over the {cap}-byte limit\n"
    return data


def _location(environ: dict[str, Any], path: str, settings: Settings) -> str:
    """The service address a served WSDL names: ``OLV_PUBLIC_URL`` + path when set, else
    the scheme (as a trusted proxy states it) and Host of the request itself."""
    if settings.public_url:
        return f"{settings.public_url}{path}"
    scheme = forwarded_scheme(environ, settings) or environ.get("wsgi.url_scheme", "http")
    host = environ.get("HTTP_HOST", "")
    if not _HOST.fullmatch(host):  # absent or not a host name: name the listening socket
        server = environ.get("SERVER_NAME", "localhost")
        server = f"[{server}]" if ":" in server else server
        host = f"{server}:{environ.get('SERVER_PORT', '80')}"
    return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '')}{path}"


def _reply(
    start_response: StartResponse, status: str, body: bytes, ctype: str, method: str = "POST"
) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [] if method == "HEAD" else [body]


def _plain(start_response: StartResponse, status: str, body: bytes) -> list[bytes]:
    return _reply(start_response, status, body, "text/plain; charset=utf-8")
