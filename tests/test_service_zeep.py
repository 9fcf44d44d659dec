"""A real SOAP client (zeep) against the real server: built from our served ``?wsdl`` and,
separately, from the third-party reference WSDLs, over the decision table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zeep
from zeep import xsd as zxsd
from zeep.plugins import HistoryPlugin
from zeep.transports import Transport

from tests.helpers import data, loopback
from tests.helpers.soap import (
    REFERENCE_FILES,
    assert_valid_response,
    days_ago,
    soap_server,
)
from tests.test_service_decision_table import CASES

SKIP = zxsd.SkipValue
ZEEP_CASES = [c for c in CASES if not c[0].startswith("idf-bad-date")]


@pytest.fixture(scope="module")
def server(module_db_url: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("zeep")
    data.load_policies(module_db_url, folder)
    env = {"OLV_DATABASE_URL": module_db_url}
    with soap_server(env, folder) as running:
        yield running


def _client(server, version: str, source: str, shared: Path | None) -> tuple[Any, HistoryPlugin]:
    history = HistoryPlugin()
    transport = Transport(timeout=10, operation_timeout=10)
    if source == "ours":
        client = zeep.Client(
            f"{server.url(f'/iicmva/{version}')}?wsdl", plugins=[history], transport=transport
        )
        return client.service, history
    if shared is None:
        pytest.skip("the shared folder with the reference WSDLs is absent")
    wsdl = shared / "reference" / "iicmva" / REFERENCE_FILES[version]
    client = zeep.Client(str(wsdl), plugins=[history], transport=transport)
    binding = next(iter(client.wsdl.bindings))
    return client.create_service(binding, server.url(f"/iicmva/{version}")), history


def _arguments(version: str, overrides: dict[str, object]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "naic": "10001",
        "key": "P-OK",
        "vin": data.VIN_OK,
        "day": days_ago(0),
        "state": "ID",
        "vehicle": True,
    }
    values.update(overrides)
    if values["day"] == "today":
        values["day"] = days_ago(0)

    def v(name: str) -> Any:
        return SKIP if values[name] is None else values[name]

    key_name = "UniqueKey" if version == "00200510" else "PolicyKey"
    policy = {
        "OrganizationDetails": SKIP if values["naic"] is None else {"NAIC": values["naic"]},
        "PolicyDetails": {
            "VerificationDate": v("day"),
            key_name: v("key"),
            "PolicyState": v("state"),
        },
    }
    detail: dict[str, Any] = {"PolicyInformation": policy}
    if values["vehicle"]:
        vehicle: dict[str, Any] = {"VIN": v("vin")}
        if version == "00200510":
            vehicle.update(Make="HONDA", Model="ACCORD", Year="2003")
        detail["VehicleInformation"] = {"VehicleDetails": vehicle}
    args: dict[str, Any] = {"Detail": detail}
    if version == "00200809":
        args.update(PublicationVersion="00200809", PublicationDate="2008-09-01")
    return args


@pytest.mark.parametrize("source", ["ours", "reference"])
@pytest.mark.parametrize("version", ["00200809", "00200510"])
def test_zeep_decision_table(server, shared_or_none, source: str, version: str) -> None:
    service, history = _client(server, version, source, shared_or_none)
    failures = []
    for case, overrides, codes_0809, codes_0510 in ZEEP_CASES:
        expected = codes_0809 if version == "00200809" else codes_0510
        result = service.VerifyInsurance(**_arguments(version, overrides))
        details = result["Detail"]
        if isinstance(details, list):  # 00200510 allows several Detail blocks
            details = details[0]
        status = details["PolicyInformation"]["CoverageStatus"]["ResponseDetails"]
        got = [
            str(c._value_1 if hasattr(c, "_value_1") else c)
            for c in status["UnconfirmedReasonCode"]
        ]
        code = status["ResponseCode"]
        code = getattr(code, "_value_1", code)
        if got != expected or code != ("Unconfirmed" if expected else "Confirmed"):
            failures.append((case, code, got, expected))
        received = history.last_received["envelope"]
        body = received.find("{*}Body")
        assert_valid_response(body[0], version, shared_or_none)
    assert failures == []


def test_wsdl_served_to_everyone_even_in_maintenance(module_db_url: str, tmp_path: Path) -> None:
    env = {
        "OLV_DATABASE_URL": module_db_url,
        "OLV_MAINTENANCE": "1",
        "OLV_REQUESTER_NETWORKS": "192.0.2.0/24",
    }
    with soap_server(env, tmp_path) as running:
        for path in ("/iicmva", "/iicmva/00200510", "/iicmva/00200809"):
            resp = loopback.get(running.url(path) + "?wsdl", timeout=10)
            assert resp.status_code == 200
            assert b"CoverageRequest" in resp.content
            assert running.url(path).encode() in resp.content  # address points back at us


def test_zeep_over_soap12_port_of_our_wsdl(server, shared_or_none) -> None:
    history = HistoryPlugin()
    client = zeep.Client(f"{server.url('/iicmva/00200809')}?wsdl", plugins=[history])
    service = client.bind("VerifyService", "VerifyServiceSoap12")
    result = service.VerifyInsurance(**_arguments("00200809", {}))
    status = result["Detail"]["PolicyInformation"]["CoverageStatus"]["ResponseDetails"]
    assert getattr(status["ResponseCode"], "_value_1", status["ResponseCode"]) == "Confirmed"
    sent = history.last_sent["envelope"]
    assert sent.tag == "{http://www.w3.org/2003/05/soap-envelope}Envelope"
    assert_valid_response(
        history.last_received["envelope"].find("{*}Body")[0], "00200809", shared_or_none
    )
