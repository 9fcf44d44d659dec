"""The floor for the SOAP benchmark: the least a Python server can do per verification.

A bare ASGI app under uvicorn that reads the request body, parses it with lxml (entities off),
takes NAIC, policy key and VIN, looks the policy up in a dict loaded from the benchmark's
policy CSV and returns one of two canned SOAP answers. No schema check, no database, no
audit: ``bench/soap_bench.py`` compares the real service against it (SPEC §4: "stay within
3.5x of such a floor").

    python bench/soap_floor.py --port 8099 --workers 3 --policies policies.csv

Needs uvicorn (``pip install uvicorn``). By default it runs uvicorn's pure-Python h11 parser
on the asyncio loop, which every uvicorn install has, so the floor does not move when someone
installs httptools/uvloop; ``--http httptools --loop uvloop`` gives the faster variant.
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


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _listener(host: str, port: int, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def serve(host: str, port: int, workers: int, http: str, loop: str) -> None:
    """Fork ``workers`` uvicorn servers, each with its own SO_REUSEPORT listening socket.

    Two pitfalls of the obvious set-ups make a floor that measures the set-up instead of the
    work: uvicorn's own ``--workers`` mode binds a socket with protocol 0, so asyncio skips
    TCP_NODELAY and every keep-alive answer waits ~40 ms for a delayed ACK; and workers
    sharing one accept queue let the first awake event loop take most of the 32 connections,
    leaving the other workers idle. With SO_REUSEPORT the kernel spreads the connections.
    """
    import uvicorn

    reserved = _listener(host, port, listen=False)  # holds the port; never accepts
    config = uvicorn.Config(
        app,
        http=http,
        loop=loop,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
    )
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            reserved.close()
            uvicorn.Server(config).run(sockets=[_listener(host, port, listen=True)])
            os._exit(0)
        children.append(pid)

    def stop(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        os.waitpid(child, 0)
    reserved.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1)
    parser.add_argument("--policies", required=True, help="the benchmark's policy CSV")
    parser.add_argument(
        "--http",
        choices=("h11", "httptools"),
        default="h11",
        help="uvicorn's HTTP parser; h11 (pure Python, always there) is the default floor",
    )
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    for wanted, module in ((args.http, "httptools"), (args.loop, "uvloop")):
        if wanted == module and not _installed(module):
            sys.exit(
                f"--{'http' if module == 'httptools' else 'loop'} {module}: pip install {module}"
            )
    try:
        import uvicorn
    except ImportError:
        sys.exit("soap_floor.py needs uvicorn: pip install uvicorn")
    POLICIES.update(load_policies(args.policies))
    print(
        f"floor: uvicorn {uvicorn.__version__}, http={args.http}, loop={args.loop}, "
        f"{args.workers} SO_REUSEPORT workers",
        flush=True,
    )
    serve(args.host, args.port, args.workers, args.http, args.loop)


if __name__ == "__main__":
    main()
