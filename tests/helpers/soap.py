"""Helpers for SOAP tests: a real server process, request builders, schema checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import xmlschema
from lxml import etree

import xsd
from olv.iicmva import IICMVA, SOAP11_ENV, SOAP12_ENV
from tests.helpers import loopback, prewarmed
from tests.helpers.free_ports import free_port

REFERENCE_FILES = {
    "00200510": "iicmva_00200510_reference.wsdl",
    "00200809": "iicmva_00200809_reference.wsdl",
}
RESPONSE_ROOT = {"00200510": "CoverageResponse", "00200809": "CoverageResponseDocument"}
# A server the tests start: a subprocess, or one forked by the prewarmed launcher.
ServerProcess = subprocess.Popen[bytes] | prewarmed.Launched
KEY_ELEMENT = {"00200510": "UniqueKey", "00200809": "PolicyKey"}


@dataclass
class Server:
    base: str
    process: ServerProcess
    log: Path

    def url(self, path: str = "/iicmva") -> str:
        return f"{self.base}{path}"

    def stop(self) -> int:
        return stop_process(self.process)


def stop_process(process: ServerProcess) -> int:
    """SIGTERM (a graceful stop), SIGKILL after 20 s; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


# How long a server may take to answer /healthz. A start takes 1-3 s on a quiet machine, but
# on a 2-core machine shared with other work it has taken over 30 s (the imports and the
# database check fight for the cores): the wait is generous because it only costs time when a
# server is truly broken, and a server that exits early is reported at once anyway.
START_SECONDS = 120.0


def start_until_healthy(
    command: list[str],
    env: dict[str, str],
    log: Path,
    base: str,
    name: str,
    prewarm: bool = True,
) -> ServerProcess:
    """``command`` in a subprocess writing to ``log``, returned once ``base``/healthz answers
    200; stopped and RuntimeError (``name`` and the log) when it exits or is not up within
    ``START_SECONDS``. ``prewarm=False``: a process of its own from the start, interpreter
    and all, where the test is about the process itself (how it ends, say)."""
    process: ServerProcess
    if prewarm and command[:3] == [sys.executable, "-m", "olv"] and prewarmed.enabled():
        process = prewarmed.launch(command[3:], env, log)
    else:
        with log.open("wb") as sink:
            process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log.read_text()}")
        try:
            if loopback.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{name} did not start:\n{log.read_text()}")
        time.sleep(0.05)


@contextmanager
def soap_server(env: dict[str, str], log_dir: Path) -> Iterator[Server]:
    """``olv soap serve`` in a subprocess (uvicorn workers), ready when /healthz answers."""
    port = free_port()
    log = log_dir / f"soap-{port}.log"
    full_env = {**os.environ, "OLV_AUDIT_FLUSH_SECONDS": "0.1", **env}
    command = [sys.executable, "-m", "olv", "soap", "serve", "--port", str(port), "--workers", "1"]
    base = f"http://127.0.0.1:{port}"
    server = Server(base, start_until_healthy(command, full_env, log, base, "server"), log)
    try:
        yield server
    finally:
        server.stop()


def request_xml(
    version: str,
    *,
    naic: str | None = "10001",
    key: str | None = "P-OK",
    vin: str | None = "1HGCM82633A004352",
    day: str | None = "today",
    state: str | None = "ID",
    publication: tuple[str, str] | None = ("00200809", "2008-09-01"),
    requestor: str | None = None,
    vehicle: bool = True,
) -> str:
    """The CoverageRequest element as text; a ``None`` value leaves the element out."""

    def element(name: str, value: str | None) -> str:
        return "" if value is None else f"<{name}>{escape(value)}</{name}>"

    if day == "today":
        day = days_ago(0)
    attrs = ""
    if version == "00200809" and publication is not None:
        attrs = f' PublicationVersion="{publication[0]}" PublicationDate="{publication[1]}"'
    vehicle_xml = ""
    if vehicle:
        vehicle_xml = (
            f"<VehicleInformation><VehicleDetails>{element('VIN', vin)}"
            + (
                "<Make>HONDA</Make><Model>ACCORD</Model><Year>2003</Year>"
                if version == "00200510"
                else ""
            )
            + "</VehicleDetails></VehicleInformation>"
        )
    naic_xml = (
        ""
        if naic is None
        else f"<OrganizationDetails>{element('NAIC', naic)}</OrganizationDetails>"
    )
    return (
        f'<CoverageRequest xmlns="{IICMVA}"{attrs}>'
        + (requestor or "")
        + "<Detail><PolicyInformation>"
        + naic_xml
        + "<PolicyDetails>"
        + element("VerificationDate", day)
        + element(KEY_ELEMENT[version], key)
        + element("PolicyState", state)
        + "</PolicyDetails></PolicyInformation>"
        + vehicle_xml
        + "</Detail></CoverageRequest>"
    )


def envelope(body: str, soap12: bool = False) -> bytes:
    ns = SOAP12_ENV if soap12 else SOAP11_ENV
    return f'<s:Envelope xmlns:s="{ns}"><s:Body>{body}</s:Body></s:Envelope>'.encode()


def post(
    url: str, body: bytes, soap12: bool = False, headers: dict[str, str] | None = None
) -> httpx.Response:
    ctype = "application/soap+xml; charset=utf-8" if soap12 else "text/xml; charset=utf-8"
    return loopback.post(
        url, content=body, headers={"Content-Type": ctype, **(headers or {})}, timeout=10
    )


def response_element(resp: httpx.Response) -> etree._Element:
    root = etree.fromstring(resp.content)
    body = root.find(f"{{{SOAP11_ENV}}}Body")
    if body is None:
        body = root.find(f"{{{SOAP12_ENV}}}Body")
    assert body is not None, resp.text
    return body[0]


def codes_of(element: etree._Element) -> tuple[str, list[str]]:
    details = element.find(f".//{{{IICMVA}}}ResponseDetails")
    assert details is not None, etree.tostring(element)
    code = details.findtext(f"{{{IICMVA}}}ResponseCode")
    reasons = [e.text for e in details.findall(f"{{{IICMVA}}}UnconfirmedReasonCode")]
    return code, reasons


@cache
def our_schema(version: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(xsd.schema_path(version)))


@cache
def reference_schema(shared: Path, version: str) -> xmlschema.XMLSchema:
    """The xs:schema inside a third-party reference WSDL (read at test time, never copied)."""
    tree = etree.parse(str(shared / "reference" / "iicmva" / REFERENCE_FILES[version]))
    schema = tree.find(".//{http://www.w3.org/2001/XMLSchema}schema")
    assert schema is not None
    return xmlschema.XMLSchema(etree.tostring(schema).decode())


def assert_valid_response(element: etree._Element, version: str, shared: Path | None) -> None:
    assert etree.QName(element).localname == RESPONSE_ROOT[version]
    our_schema(version).validate(element)
    if shared is not None:
        reference_schema(shared, version).validate(element)


def today() -> datetime:
    return datetime.now(UTC)


def days_ago(n: int) -> str:
    """A VerificationDate ``n`` days before today (UTC, the service's default zone)."""
    return f"{(today() - timedelta(days=n)).date().isoformat()}T00:00:00"


@contextmanager
def application(database_url: str, folder: Path, key: str) -> Iterator[Any]:
    """The SOAP application in this process over ``database_url`` with the test policies
    loaded, answering requesters that send ``key`` (``X-API-Key``)."""
    from olv.config import Settings
    from service.soap_app import SoapApplication
    from tests.helpers import data

    data.load_policies(database_url, folder)
    app = SoapApplication(
        Settings(database_url=database_url, requester_api_keys=[key], requester_networks=[])
    )
    try:
        yield app
    finally:
        app.close()
