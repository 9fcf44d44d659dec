"""The floor for the SOAP benchmark: the least a Python server can do per verification.

A bare ASGI app that reads the request body, parses it with lxml (entities off), takes NAIC,
policy key and VIN, looks the policy up in a dict loaded from the benchmark's policy CSV and
returns one of two canned SOAP answers. No schema check, no database, no audit:
``bench/soap_bench.py`` compares the real service against it (SPEC §4: "stay within 3.5x of
such a floor").

It runs on the service's own HTTP stack, so that the ratio measures our work and not a
difference of server: the very ``uvicorn.Config`` that ``olv soap serve`` builds
(``service/server.py``: httptools, uvloop, the same keep-alive and header settings) with only
the application swapped, and the same worker layout — one process per worker, each with its
own ``SO_REUSEPORT`` listening socket, as many workers as the service has by default. With
``--stack bare`` (the default, SPEC §4's floor) the connections run uvicorn's own httptools
protocol; with ``--stack service``, the service's protocol class too (its read timeouts and
its writes held to the end of the loop's turn).

    python bench/soap_floor.py --port 8099 --policies policies.csv [--workers N] [--stack S]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
from typing import Any

import uvicorn
from lxml import etree

from olv import normalize, serving
from olv.config import Settings
from olv.iicmva import IICMVA, PUBLICATION_DATE_0809, SOAP11_ENV, V0809, Code
from service import server as service_server

_NS = f"{{{IICMVA}}}"
_INFO = f"{_NS}Detail/{_NS}PolicyInformation"
_NAIC = f"{_INFO}/{_NS}OrganizationDetails/{_NS}NAIC"
_POLICY = f"{_INFO}/{_NS}PolicyDetails"
_VIN = f"{_NS}Detail/{_NS}VehicleInformation/{_NS}VehicleDetails/{_NS}VIN"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
FLEET_VIN = "*"  # a fleet policy covers any VIN

_ANSWER = f"""<?xml version='1.0' encoding='UTF-8'?>
<soap:Envelope xmlns:soap="{SOAP11_ENV}"><soap:Body>\
<CoverageResponseDocument xmlns="{IICMVA}" \
PublicationVersion="{V0809}" PublicationDate="{PUBLICATION_DATE_0809}"><Detail><PolicyInformation>\
<CoverageStatus><ResponseDetails><ResponseCode>{{code}}</ResponseCode>{{reasons}}</ResponseDetails>\
</CoverageStatus><OrganizationDetails><NAIC>00000</NAIC></OrganizationDetails><PolicyDetails>\
<VerificationDate>2026-01-01T00:00:00</VerificationDate><PolicyKey>NONE</PolicyKey>\
<PolicyState>XX</PolicyState></PolicyDetails></PolicyInformation></Detail>\
</CoverageResponseDocument></soap:Body></soap:Envelope>"""
CONFIRMED = _ANSWER.format(code="Confirmed", reasons="").encode()
UNCONFIRMED = _ANSWER.format(
    code="Unconfirmed",
    reasons=f"<UnconfirmedReasonCode>{Code.PKEY2.value}</UnconfirmedReasonCode>",
).encode()
_HEADERS = [(b"content-type", b"text/xml; charset=utf-8")]


def load_policies(path: str) -> dict[tuple[str, str], set[str]]:
    """(NAIC, normalized policy key) -> VINs on the policy (FLEET_VIN for a fleet policy)."""
    policies: dict[tuple[str, str], set[str]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["naic"], normalize.policy_key(row["policy_number"]))
            policies.setdefault(key, set()).add(normalize.vin(row["vin"]) or FLEET_VIN)
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
    vin = normalize.vin(_text(request.find(_VIN)))
    vins = POLICIES.get((naic, normalize.policy_key(_text(key_node))))
    if vins is not None and (vin in vins or FLEET_VIN in vins):
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


STACKS = ("bare", "service")


def floor_config(host: str, port: int, stack: str = "bare") -> uvicorn.Config:
    """The service's uvicorn configuration with the floor's application in place of ours.

    ``bare``: uvicorn's own httptools protocol, as SPEC §4 describes the floor (a bare uvicorn
    worker on httptools and uvloop). ``service``: the very protocol the service runs, with its
    read timeouts and its writes held to the end of the loop's turn (olv.response_write), so
    that the ratio counts only the application's work."""
    config = service_server._config(host, port, Settings())
    config.app = app
    config.factory = False
    if stack == "bare":
        config.http = "httptools"
    return config


def serve(host: str, port: int, workers: int, stack: str) -> None:
    """Fork ``workers`` uvicorn servers, each with its own SO_REUSEPORT listening socket."""
    serving.listen(host, port).close()  # fail here if the address is unusable
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            sock = serving.listen(host, port)
            uvicorn.Server(floor_config(host, port, stack)).run(sockets=[sock])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--workers",
        type=int,
        default=service_server.default_workers(),
        help="worker processes (default: the service's default, one per core)",
    )
    parser.add_argument("--policies", required=True, help="the benchmark's policy CSV")
    parser.add_argument(
        "--stack",
        choices=STACKS,
        default="bare",
        help="bare: uvicorn's own httptools protocol (SPEC §4); service: the service's protocol",
    )
    args = parser.parse_args()
    POLICIES.update(load_policies(args.policies))
    config = floor_config(args.host, args.port, args.stack)
    protocol = "uvicorn's own" if args.stack == "bare" else "the service's"
    print(
        f"floor ({args.stack}): uvicorn {uvicorn.__version__}, http=httptools ({protocol} "
        f"protocol), loop={config.loop}, {args.workers} SO_REUSEPORT workers",
        flush=True,
    )
    serve(args.host, args.port, args.workers, args.stack)


if __name__ == "__main__":
    main()
