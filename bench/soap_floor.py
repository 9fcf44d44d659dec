"""The floor for the SOAP benchmark: the least a Python server can do per verification.

A bare ASGI app under uvicorn that reads the request body, parses it with lxml (entities off),
takes NAIC, policy key and VIN, looks the policy up in a dict loaded from the benchmark's
policy CSV and returns one of two canned SOAP answers. No schema check, no database, no
audit: ``bench/soap_bench.py`` compares the real service against it (SPEC §4: "stay within
3.5x of such a floor").

    python bench/soap_floor.py --port 8099 --workers 3 --policies policies.csv

Needs uvicorn (``pip install uvicorn``); it uses httptools/uvloop when they are installed
and says which HTTP implementation it runs with.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import signal
import socket
import sys
from typing import Any

from lxml import etree

_NS = "{http://www.iicmva.com/CoverageVerification/}"
_INFO = f"{_NS}Detail/{_NS}PolicyInformation"
_NAIC = f"{_INFO}/{_NS}OrganizationDetails/{_NS}NAIC"
_POLICY = f"{_INFO}/{_NS}PolicyDetails"
_VIN = f"{_NS}Detail/{_NS}VehicleInformation/{_NS}VehicleDetails/{_NS}VIN"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]+")

_ANSWER = """<?xml version='1.0' encoding='UTF-8'?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>\
<CoverageResponseDocument xmlns="http://www.iicmva.com/CoverageVerification/" \
PublicationVersion="00200809" PublicationDate="2008-09-01"><Detail><PolicyInformation>\
<CoverageStatus><ResponseDetails><ResponseCode>{code}</ResponseCode>{reasons}</ResponseDetails>\
</CoverageStatus><OrganizationDetails><NAIC>00000</NAIC></OrganizationDetails><PolicyDetails>\
<VerificationDate>2008-09-01T00:00:00</VerificationDate><PolicyKey>NONE</PolicyKey>\
<PolicyState>XX</PolicyState></PolicyDetails></PolicyInformation></Detail>\
</CoverageResponseDocument></soap:Body></soap:Envelope>"""
CONFIRMED = _ANSWER.format(code="Confirmed", reasons="").encode()
UNCONFIRMED = _ANSWER.format(
    code="Unconfirmed", reasons="<UnconfirmedReasonCode>PKEY2</UnconfirmedReasonCode>"
).encode()
_HEADERS = [(b"content-type", b"text/xml; charset=utf-8")]


def load_policies(path: str) -> dict[tuple[str, str], set[str]]:
    """(NAIC, normalized policy key) -> VINs on the policy ("*" for a fleet policy)."""
    policies: dict[tuple[str, str], set[str]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["naic"], _NON_ALNUM.sub("", row["policy_number"]).upper())
            policies.setdefault(key, set()).add(row["vin"].upper() or "*")
    return policies


POLICIES: dict[tuple[str, str], set[str]] = {}


def _text(node: etree._Element | None) -> str:
    return (node.text or "").strip() if node is not None else ""


def answer(body: bytes) -> bytes:
    envelope = etree.fromstring(body, _PARSER)
    request = envelope[0][0]  # Envelope/Body/CoverageRequest
    naic = _text(request.find(_NAIC))
    details = request.find(_POLICY)
    key_node = None
    if details is not None:
        key_node = details.find(f"{_NS}PolicyKey")
        if key_node is None:
            key_node = details.find(f"{_NS}UniqueKey")
    vin = _text(request.find(_VIN))
    vins = POLICIES.get((naic, _NON_ALNUM.sub("", _text(key_node)).upper()))
    if vins is not None and (vin.upper() in vins or "*" in vins):
        return CONFIRMED
    return UNCONFIRMED


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        status, payload = 200, b"ok\n"
    else:
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        try:
            status, payload = 200, answer(b"".join(chunks))
        except (etree.XMLSyntaxError, IndexError):
            status, payload = 500, b"bad request\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def http_implementation() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def serve(host: str, port: int, workers: int) -> None:
    """Pre-fork ``workers`` uvicorn servers sharing one listening socket (like gunicorn).

    The socket is made with ``IPPROTO_TCP`` so that asyncio sets TCP_NODELAY on accepted
    connections. (uvicorn's own ``--workers`` mode binds a socket with protocol 0, asyncio
    then skips TCP_NODELAY and every keep-alive answer waits ~40 ms for a delayed ACK.)
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_keep_alive=30
    )
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            uvicorn.Server(config).run(sockets=[sock])
            os._exit(0)
        children.append(pid)
    sock.close()

    def stop(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        os.waitpid(child, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1)
    parser.add_argument("--policies", required=True, help="the benchmark's policy CSV")
    args = parser.parse_args()
    try:
        import uvicorn
    except ImportError:
        sys.exit("soap_floor.py needs uvicorn: pip install uvicorn")
    POLICIES.update(load_policies(args.policies))
    print(
        f"floor: uvicorn {uvicorn.__version__}, http={http_implementation()}, "
        f"{args.workers} pre-forked workers",
        flush=True,
    )
    serve(args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
