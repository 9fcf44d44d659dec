"""An insurer's answer counts only for what was asked: a Confirmed whose echo names another
vehicle (VIN) or another insurer (NAIC) is not usable, however schema-valid. Asked through the
real transport of a real portal app, of a raw-socket fake insurer that answers as scripted."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date

import pytest
from fastapi.testclient import TestClient

from olv import db
from olv.config import Settings
from olv.iicmva import IICMVA, SOAP11_ENV, V0510, V0809
from portal.app import create_app
from portal.insurer_client import InsurerClient, InsurerConfig
from portal.settings import PortalSettings
from portal.soap_wire import Ask
from tests.helpers import raw_http
from tests.helpers.portal import add_insurer, add_user

NAIC = "77700"
VIN = "2T1BURHE0JC014706"
OTHER_VIN = "1HGCM82633A004352"
Echo = Callable[[dict[str, str]], dict[str, str | None]]


def confirmed(version: str, naic: str, key: str, vin: str | None) -> bytes:
    """A schema-valid Confirmed answer of ``version`` echoing these values (no vehicle block
    when ``vin`` is None)."""
    root = "CoverageResponseDocument" if version == V0809 else "CoverageResponse"
    attrs = (
        ' PublicationVersion="00200809" PublicationDate="2008-09-01"' if version == V0809 else ""
    )
    key_tag = "PolicyKey" if version == V0809 else "UniqueKey"
    vehicle = ""
    if vin is not None:
        extra = "<Make>X</Make><Model>Y</Model><Year>2020</Year>" if version == V0510 else ""
        vehicle = (
            f"<VehicleInformation><VehicleDetails><VIN>{vin}</VIN>{extra}"
            "</VehicleDetails></VehicleInformation>"
        )
    body = (
        f'<{root} xmlns="{IICMVA}"{attrs}><Detail><PolicyInformation><CoverageStatus>'
        "<ResponseDetails><ResponseCode>Confirmed</ResponseCode></ResponseDetails>"
        f"</CoverageStatus><OrganizationDetails><NAIC>{naic}</NAIC></OrganizationDetails>"
        f"<PolicyDetails><VerificationDate>{date.today().isoformat()}T00:00:00</VerificationDate>"
        f"<{key_tag}>{key}</{key_tag}><PolicyState>ID</PolicyState></PolicyDetails>"
        f"</PolicyInformation>{vehicle}</Detail></{root}>"
    )
    return f'<s:Envelope xmlns:s="{SOAP11_ENV}"><s:Body>{body}</s:Body></s:Envelope>'.encode()


def asked_values(request: bytes) -> dict[str, str]:
    def text(tag: str) -> str:
        found = re.search(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), request)
        return found.group(1).decode() if found else ""

    return {"naic": text("NAIC"), "key": text("PolicyKey") or text("UniqueKey"), "vin": text("VIN")}


@contextmanager
def fake_insurer(version: str, echo: Echo) -> Iterator[str]:
    """Answers every request Confirmed, echoing what ``echo(asked)`` says; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            while (request := raw_http.read_request(conn)) is not None:
                said = echo(asked_values(request))
                body = confirmed(version, said["naic"] or "", said["key"] or "", said["vin"])
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )

    raw_http.accept_on_thread(listener, serve)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/iicmva/{version}"
    finally:
        listener.close()


def as_asked(asked: dict[str, str]) -> dict[str, str | None]:
    return {**asked}


def other_vehicle(asked: dict[str, str]) -> dict[str, str | None]:
    return {**asked, "vin": OTHER_VIN}


def other_insurer(asked: dict[str, str]) -> dict[str, str | None]:
    return {**asked, "naic": "99999"}


def vin_typed_otherwise(asked: dict[str, str]) -> dict[str, str | None]:
    return {**asked, "vin": f" {asked['vin'].lower()} "}


def no_vehicle_block(asked: dict[str, str]) -> dict[str, str | None]:
    return {**asked, "vin": None}


def another_key_spelling(asked: dict[str, str]) -> dict[str, str | None]:
    return {**asked, "key": "DEMO-1001"}  # the policy it found: not compared


def ask(vin: str = VIN, key: str = "P1") -> Ask:
    return Ask(NAIC, key, vin, date.today(), "VIOL", "ID", "Idaho State Police")


@pytest.mark.parametrize("version", [V0809, V0510])
@pytest.mark.parametrize(
    ("echo", "outcome"),
    [
        (as_asked, "ok"),
        (vin_typed_otherwise, "ok"),
        (no_vehicle_block, "ok"),
        (another_key_spelling, "ok"),
        (other_vehicle, "invalid"),
        (other_insurer, "invalid"),
    ],
)
def test_an_answer_is_used_only_when_its_echo_is_what_was_asked(
    version: str, echo: Echo, outcome: str
) -> None:
    async def run(url: str) -> object:
        client = InsurerClient(None, PortalSettings())
        try:
            return await client.verify(InsurerConfig(NAIC, "Fake", url, version), ask(), 5.0)
        finally:
            await client.aclose()

    with fake_insurer(version, echo) as url:
        result = asyncio.run(run(url))
    assert result.outcome == outcome, result  # type: ignore[attr-defined]
    if outcome == "ok":
        assert result.answer.response_code == "Confirmed"  # type: ignore[attr-defined]
    else:
        # Said by field, never with the values (the detail goes to the insurer-call log).
        detail: str = result.detail  # type: ignore[attr-defined]
        assert "not the one asked" in detail and VIN not in detail and OTHER_VIN not in detail


@pytest.fixture
def portal(db_url: str) -> Iterator[tuple[TestClient, str, str]]:
    """A portal app with its real insurer transport, an officer's token, and its database."""
    engine = db.make_engine(db_url)
    token = add_user(engine, "officer1", "officer")
    engine.dispose()
    app = create_app(Settings(database_url=db_url), PortalSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, token, db_url


def test_a_confirmed_for_another_vehicle_is_unable_to_verify_not_confirmed(portal) -> None:
    client, token, url = portal
    question = {"vin": VIN, "naic": NAIC, "policy_number": "P1"}
    headers = {"Authorization": f"Bearer {token}"}
    echo: list[Echo] = [other_vehicle]
    with fake_insurer(V0809, lambda asked: echo[0](asked)) as insurer_url:
        engine = db.make_engine(url)
        add_insurer(engine, NAIC, insurer_url)
        engine.dispose()
        wrong = client.post("/api/v1/verify", json=question, headers=headers)
        echo[0] = as_asked
        right = client.post("/api/v1/verify", json=question, headers=headers)
    assert wrong.status_code == 200, wrong.text
    said = wrong.json()
    assert (said["status"], said["verdict"]) == ("Unconfirmed", "unable_to_verify")
    assert [r["code"] for r in said["reasons"]] == ["SYSU"] and said["vin"] == VIN
    assert right.status_code == 200 and right.json()["verdict"] == "confirmed", right.text
