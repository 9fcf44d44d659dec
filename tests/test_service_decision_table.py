"""The SPEC §1 decision table, both versions, through a real uvicorn server over HTTP.

Each case is sent to the version's own endpoint and to the auto-detecting one; every response
is checked against our XSD and the third-party reference schema.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import data
from tests.helpers.soap import (
    assert_valid_response,
    codes_of,
    days_ago,
    envelope,
    post,
    request_xml,
    response_element,
    soap_server,
)

API_KEY = {"X-API-Key": "table-key"}

# id, request overrides, 00200809 codes, 00200510 codes (both written out by hand from SPEC §1)
CASES: list[tuple[str, dict[str, object], list[str], list[str]]] = [
    ("confirmed", {}, [], []),
    ("confirmed-key-normalized", {"key": " p ok "}, [], []),
    ("confirmed-vin-normalized", {"vin": "1hgcm8 2633a004352"}, [], []),
    ("confirmed-short-vin", {"vin": data.VIN_SHORT}, [], []),
    ("confirmed-date-offset-ignored", {"day": days_ago(0)[:10] + "T23:59:59-11:00"}, [], []),
    ("fleet-any-vin", {"key": "FLEET-1", "vin": data.VIN_NOWHERE}, [], []),
    ("fleet-not-in-force", {"key": "FLEET-OLD"}, ["PKEY3"], ["8"]),
    (
        "cancelled-day-before",
        {"key": "P-CANCEL", "vin": data.VIN_CANCELLED, "day": days_ago(11)},
        [],
        [],
    ),
    (
        "cancelled-on-cancel-day",
        {"key": "P-CANCEL", "vin": data.VIN_CANCELLED, "day": days_ago(10)},
        ["PKEY3"],
        ["8"],
    ),
    ("expired", {"key": "P-EXPIRED", "vin": data.VIN_EXPIRED}, ["PKEY3"], ["8"]),
    ("vin-not-on-policy", {"vin": data.VIN_CANCELLED}, ["PKEY4"], ["9"]),
    ("pending-review", {"key": "P-REVIEW", "vin": data.VIN_REVIEW}, ["POL1"], ["11"]),
    ("unknown-key-covered", {"key": "unknown"}, [], []),
    ("unknown-key-not-covered", {"key": "UNKNOWN", "vin": data.VIN_EXPIRED}, ["VIN2"], ["8"]),
    ("unknown-key-vin-missing", {"key": "Unknown", "vin": data.VIN_NOWHERE}, ["VIN1"], ["7"]),
    ("key-not-found-vin-covered", {"key": "NOPE-1"}, ["VIN3"], ["10"]),
    (
        "key-not-found-vin-not-covered",
        {"key": "NOPE-1", "vin": data.VIN_EXPIRED},
        ["VIN2", "VIN3"],
        ["8", "10"],
    ),
    (
        "key-not-found-vin-unknown",
        {"key": "NOPE-1", "vin": data.VIN_NOWHERE},
        ["PKEY2", "VIN1"],
        ["7"],
    ),
    ("naic-not-served", {"naic": "55555"}, ["NAIC2"], ["7"]),
    ("date-too-old", {"day": days_ago(184)}, ["VDT1"], ["8"]),
    (
        "date-oldest-allowed",
        {"key": "P-EXPIRED", "vin": data.VIN_EXPIRED, "day": days_ago(183)},
        [],
        [],
    ),
    ("date-in-future", {"day": days_ago(-1)}, ["VDT1"], ["8"]),
    ("naic-absent", {"naic": None}, ["NAIC1"], ["3"]),
    ("naic-blank", {"naic": "   "}, ["NAIC1"], ["3"]),
    ("key-empty", {"key": ""}, ["PKEY1"], ["2"]),
    ("key-absent", {"key": None}, ["PKEY1"], ["2"]),
    ("vin-absent", {"vin": None}, ["VIN4"], ["4"]),
    ("vehicle-block-absent", {"vehicle": False}, ["VIN4"], ["4"]),
    ("date-blank", {"day": " "}, ["VDT2"], ["5"]),
    ("date-absent", {"day": None}, ["VDT2"], ["5"]),
    (
        "all-four-missing",
        {"naic": "", "key": None, "vin": "", "day": ""},
        ["NAIC1", "PKEY1", "VIN4", "VDT2"],
        ["3", "2", "4", "5"],
    ),
    ("idf-bad-date", {"day": "2026-13-45T00:00:00"}, ["IDF"], ["1"]),
    # Python reads offsets up to ±23:59, xs:dateTime allows ±14:00: never echoed as they are.
    ("idf-offset-past-14-hours", {"day": "2026-11-01T00:00:00+14:01"}, ["IDF"], ["1"]),
    ("idf-offset-60-minutes", {"day": "2026-11-01T00:00:00+13:60"}, ["IDF"], ["1"]),
    ("idf-naic-not-digits", {"naic": "12A45"}, ["IDF"], ["1"]),
    ("idf-naic-non-ascii-digits", {"naic": "\u0661\u0662\u0663\u0664\u0665"}, ["IDF"], ["1"]),
    ("idf-policy-state-absent", {"state": None}, ["IDF"], ["1"]),
    ("idf-beats-missing", {"state": None, "naic": None}, ["IDF"], ["1"]),
]


@pytest.fixture(scope="module")
def server(module_db_url: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("table")
    data.load_policies(module_db_url, folder)
    env = {
        "OLV_DATABASE_URL": module_db_url,
        "OLV_REQUESTER_NETWORKS": "192.0.2.0/24",  # not loopback: identity must come from the key
        "OLV_REQUESTER_API_KEYS": "table-key",
    }
    with soap_server(env, folder) as running:
        yield running


@pytest.mark.parametrize("version", ["00200809", "00200510"])
@pytest.mark.parametrize(
    ("case", "overrides", "codes_0809", "codes_0510"), CASES, ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("auto", [False, True], ids=["versioned", "auto"])
def test_decision_table(
    server, shared_or_none: Path | None, version, case, overrides, codes_0809, codes_0510, auto
) -> None:
    body = request_xml(version, **overrides)  # type: ignore[arg-type]
    path = "/iicmva" if auto else f"/iicmva/{version}"
    resp = post(server.url(path), envelope(body), headers=API_KEY)
    assert resp.status_code == 200, resp.text
    element = response_element(resp)
    assert_valid_response(element, version, shared_or_none)
    code, reasons = codes_of(element)
    expected = codes_0809 if version == "00200809" else codes_0510
    assert reasons == expected
    assert code == ("Unconfirmed" if expected else "Confirmed")


def test_idf_bad_publication_version(server, shared_or_none) -> None:
    body = request_xml("00200809", publication=("2008", "2008-09-01"))
    for path in ("/iicmva", "/iicmva/00200809"):
        element = response_element(post(server.url(path), envelope(body), headers=API_KEY))
        assert codes_of(element) == ("Unconfirmed", ["IDF"])
        assert element.get("PublicationVersion") == "00200809"  # documented placeholder
        assert_valid_response(element, "00200809", shared_or_none)


def test_auto_endpoint_old_publication_version_uses_0510_rules(server, shared_or_none) -> None:
    body = request_xml("00200510").replace(
        "<CoverageRequest ", '<CoverageRequest PublicationVersion="00200510" '
    )
    element = response_element(post(server.url("/iicmva"), envelope(body), headers=API_KEY))
    assert_valid_response(element, "00200510", shared_or_none)
    assert codes_of(element) == ("Confirmed", [])


def test_requestor_and_vehicle_echoed_insured_never(server, shared_or_none) -> None:
    requestor = (
        "<RequestorInformation><Organization><Name>Ada County Sheriff</Name></Organization>"
        "<ReasonDetails><ReasonCode>VIOL</ReasonCode><TrackingNumber>T-77</TrackingNumber>"
        "</ReasonDetails></RequestorInformation>"
    )
    insured = (
        "<InsuredInformation><PrimaryNameInformation><Name>Jane Q Public</Name>"
        "</PrimaryNameInformation><Address><StreetAddress>1 Main St</StreetAddress>"
        "</Address></InsuredInformation>"
    )
    body = request_xml("00200809", requestor=requestor).replace(
        "</PolicyInformation>", "</PolicyInformation>" + insured
    )
    resp = post(server.url("/iicmva/00200809"), envelope(body), headers=API_KEY)
    element = response_element(resp)
    assert_valid_response(element, "00200809", shared_or_none)
    assert "T-77" in resp.text and "Ada County Sheriff" in resp.text
    assert data.VIN_OK in resp.text
    assert "Jane" not in resp.text and "Main St" not in resp.text


def test_soap12_on_0809_and_auto(server, shared_or_none) -> None:
    for path in ("/iicmva/00200809", "/iicmva"):
        resp = post(
            server.url(path),
            envelope(request_xml("00200809"), soap12=True),
            soap12=True,
            headers=API_KEY,
        )
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/soap+xml")
        element = response_element(resp)
        assert_valid_response(element, "00200809", shared_or_none)
        assert codes_of(element) == ("Confirmed", [])
