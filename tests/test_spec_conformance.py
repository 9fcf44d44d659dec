"""SPEC §1–§3 read as an outside acceptance tester would: points no other test pins.

Everything goes through a real ``olv soap serve`` over HTTP or the real ``olv`` command; each
case names the SPEC sentence it checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from lxml import etree

from bob_loader import synth
from tests.helpers import data, loopback, prewarmed
from tests.helpers.day_change import wait_past_midnight
from tests.helpers.soap import (
    Server,
    assert_valid_response,
    codes_of,
    envelope,
    free_port,
    post,
    request_xml,
    response_element,
    soap_server,
)

NAIC = "20001"
OTHER_NAIC = "20002"
VIN_REVIEW = "1HGCM82633A004352"
VIN_PUNCT = "2HGCM82633A004352"
VIN_GAP = "3HGCM82633A004352"
VIN_TWO = "4HGCM82633A004352"
VIN_OTHER = "5HGCM82633A004352"
VIN_CANCEL_TODAY = "7HGCM82633A004352"
VIN_EXPIRES_TOMORROW = "8HGCM82633A004352"
VIN_EFFECTIVE_TODAY = "9HGCM82633A004352"
VIN_EDGES = "1FTFW1ET5DFC10312"
VIN_EXPIRED = "5YJSA1E26HF000337"
VIN_OK = "1G1JC5SH0C4100001"


def day(offset: int, zone: ZoneInfo | None = None) -> date:
    """Today (in ``zone``, default UTC) plus ``offset`` days."""
    return datetime.now(zone or UTC).date() + timedelta(days=offset)


def written(offset: int, time_and_zone: str = "T00:00:00") -> str:
    """A VerificationDate ``offset`` days from today (negative: in the past)."""
    return day(offset).isoformat() + time_and_zone


def policy_rows() -> list[tuple[str, ...]]:
    def iso(offset: int) -> str:
        return day(offset).isoformat()

    return [
        (NAIC, "OK-1", "VS", VIN_OK, iso(-300), iso(300), "", ""),
        (NAIC, "FLEET-REV", "NS", "", iso(-100), iso(200), "", "true"),
        (NAIC, "P-REV", "VS", VIN_REVIEW, iso(-100), iso(-50), "", "true"),
        (NAIC, "P/Q 7", "VS", VIN_PUNCT, iso(-100), iso(200), "", ""),
        (NAIC, "GAP", "VS", VIN_GAP, iso(-100), iso(-50), "", ""),
        (NAIC, "GAP", "VS", VIN_GAP, iso(-20), iso(200), "", ""),
        (NAIC, "TWO-A", "VS", VIN_TWO, iso(-100), iso(-50), "", ""),
        (NAIC, "TWO-B", "VS", VIN_TWO, iso(-20), iso(200), "", ""),
        (OTHER_NAIC, "OTHER", "VS", VIN_OTHER, iso(-20), iso(200), "", ""),
        (NAIC, "CXL-TODAY", "VS", VIN_CANCEL_TODAY, iso(-20), iso(200), iso(0), ""),
        (NAIC, "EXP-TOMORROW", "VS", VIN_EXPIRES_TOMORROW, iso(-20), iso(1), "", ""),
        (NAIC, "SHORT-VIN", "VS", "ab 12", iso(-20), iso(200), "", ""),
        (NAIC, "NS-LISTED", "NS", "6HGCM82633A004352", iso(-20), iso(200), "", ""),
        (NAIC, "EXP-PAST", "VS", VIN_EXPIRED, iso(-100), iso(-30), "", ""),
        (NAIC, "EFF-TODAY", "VS", VIN_EFFECTIVE_TODAY, iso(0), iso(100), "", ""),
        # effective 40 days ago, cancelled 30 days ago, expiring in 10 days
        (NAIC, "EDGES", "VS", VIN_EDGES, iso(-40), iso(10), iso(-30), ""),
    ]


def load_store(database_url: str, folder: Path) -> None:
    path = folder / "policies.csv"
    header = "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review"
    path.write_text("\n".join([header, *(",".join(r) for r in policy_rows())]) + "\n")
    data.load_policy_file(database_url, path)


@pytest.fixture(scope="module")
def server(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("conformance")
    load_store(module_db_url, folder)
    with soap_server({"OLV_DATABASE_URL": module_db_url}, folder) as running:
        yield running


def ask(
    server: Server, version: str, path: str | None = None, **overrides: object
) -> etree._Element:
    overrides.setdefault("naic", NAIC)
    overrides.setdefault("key", "OK-1")
    overrides.setdefault("vin", VIN_OK)
    body = envelope(request_xml(version, **overrides))  # type: ignore[arg-type]
    resp = post(server.url(path or f"/iicmva/{version}"), body)
    assert resp.status_code == 200, resp.text
    return response_element(resp)


# id, overrides, 00200809 codes, 00200510 codes — written out by hand from SPEC §1
CASES: list[tuple[str, dict[str, object], list[str], list[str]]] = [
    # "Checked in this order; a step that yields codes ends the evaluation."
    ("naic2-before-vdt1", {"naic": "55555", "day": written(200)}, ["NAIC2"], ["7"]),
    ("missing-key-before-naic2", {"key": None, "naic": "55555"}, ["PKEY1"], ["2"]),
    ("missing-vin-before-vdt1", {"vin": "", "day": written(5)}, ["VIN4"], ["4"]),
    ("blank-date-before-naic2", {"day": " \t ", "naic": "55555"}, ["VDT2"], ["5"]),
    ("idf-date-beats-missing-naic", {"day": "soon", "naic": None}, ["IDF"], ["1"]),
    ("key-whitespace-only", {"key": "\t \n "}, ["PKEY1"], ["2"]),
    # "only its date part as written counts, any offset ignored"
    ("today-late-west", {"day": day(0).isoformat() + "T23:59:59-12:00"}, [], []),
    ("today-early-east", {"day": day(0).isoformat() + "T00:00:00+14:00"}, [], []),
    ("tomorrow-far-west", {"day": day(1).isoformat() + "T00:00:00-12:00"}, ["VDT1"], ["8"]),
    ("183-days-east", {"day": day(-183).isoformat() + "T23:59:59+14:00"}, [], []),
    ("184-days-west", {"day": day(-184).isoformat() + "T00:00:00-12:00"}, ["VDT1"], ["8"]),
    ("fraction-and-z", {"day": day(0).isoformat() + "T10:11:12.345Z"}, [], []),
    # xs:dateTime collapses whitespace: a padded date is a valid, parseable date (not IDF)
    ("date-padded", {"day": "\n  " + written(0) + "  \n"}, [], []),
    # "coverage ends at 12:01 a.m. on the cancellation date: that day is not covered"
    ("cancel-day", {"key": "CXL-TODAY", "vin": VIN_CANCEL_TODAY}, ["PKEY3"], ["8"]),
    (
        "cancel-day-before",
        {"key": "CXL-TODAY", "vin": VIN_CANCEL_TODAY, "day": written(-1)},
        [],
        [],
    ),
    ("cancel-day-past", {"key": "EDGES", "vin": VIN_EDGES, "day": written(-30)}, ["PKEY3"], ["8"]),
    ("day-before-cancel", {"key": "EDGES", "vin": VIN_EDGES, "day": written(-31)}, [], []),
    ("expiry-day", {"key": "EXP-PAST", "vin": VIN_EXPIRED, "day": written(-30)}, ["PKEY3"], ["8"]),
    ("day-before-expiry", {"key": "EXP-PAST", "vin": VIN_EXPIRED, "day": written(-31)}, [], []),
    ("expiry-tomorrow", {"key": "EXP-TOMORROW", "vin": VIN_EXPIRES_TOMORROW}, [], []),
    ("effective-day", {"key": "EFF-TODAY", "vin": VIN_EFFECTIVE_TODAY}, [], []),
    (
        "day-before-effective",
        {"key": "EDGES", "vin": VIN_EDGES, "day": written(-41)},
        ["PKEY3"],
        ["8"],
    ),
    ("first-day-effective", {"key": "EDGES", "vin": VIN_EDGES, "day": written(-40)}, [], []),
    # "policy marked pending manual review → POL1" comes before the VIN and date checks
    ("review-fleet", {"key": "FLEET-REV", "vin": "ANY0VIN"}, ["POL1"], ["11"]),
    ("review-vin-not-on-policy", {"key": "P-REV", "vin": VIN_OK}, ["POL1"], ["11"]),
    ("review-not-covered", {"key": "P-REV", "vin": VIN_REVIEW}, ["POL1"], ["11"]),
    # "compared after removing every non-alphanumeric character and upper-casing"
    ("store-key-punctuated", {"key": "pq7", "vin": VIN_PUNCT}, [], []),
    ("both-keys-punctuated", {"key": "p.q-7#", "vin": VIN_PUNCT.lower()}, [], []),
    ("covered-in-second-period", {"key": "GAP", "vin": VIN_GAP}, [], []),
    ("gap-between-periods", {"key": "GAP", "vin": VIN_GAP, "day": written(-30)}, ["PKEY3"], ["8"]),
    # "VIN compared upper-cased with spaces removed; non-17-character VINs are legitimate"
    ("short-vin-stored-with-space", {"key": "SHORT-VIN", "vin": "AB12"}, [], []),
    ("short-vin-sent-with-space", {"key": "short-vin", "vin": " a b1 2 "}, [], []),
    # an NS policy is verified at policy level even when it lists some VINs
    ("ns-listing-other-vins", {"key": "NS-LISTED", "vin": VIN_OK}, [], []),
    # key found, VIN on it, not covered — even though another policy covers the VIN
    ("key-names-the-lapsed-policy", {"key": "TWO-A", "vin": VIN_TWO}, ["PKEY3"], ["8"]),
    ("key-of-another-naic", {"key": "OTHER", "vin": VIN_OTHER}, ["PKEY2", "VIN1"], ["7"]),
    # "Policy key UNKNOWN (any case) → VIN-only search within the NAIC"
    ("unknown-padded", {"key": "  unKnown "}, [], []),
    ("unknown-any-policy-covers", {"key": "UNKNOWN", "vin": VIN_TWO}, [], []),
    ("unknown-vin-of-other-naic", {"key": "UNKNOWN", "vin": VIN_OTHER}, ["VIN1"], ["7"]),
    (
        "unknown-fleet-not-vin-search",
        {"key": "UNKNOWN", "vin": "ANY0VIN"},
        ["VIN1"],
        ["7"],
    ),
]


@pytest.mark.parametrize("version", ["00200809", "00200510"])
@pytest.mark.parametrize(
    ("case", "overrides", "codes_0809", "codes_0510"), CASES, ids=[c[0] for c in CASES]
)
def test_decision_table_edges(
    server, shared_or_none, version, case, overrides, codes_0809, codes_0510
) -> None:
    for path in (f"/iicmva/{version}", "/iicmva"):
        element = ask(server, version, path, **overrides)
        assert_valid_response(element, version, shared_or_none)
        expected = codes_0809 if version == "00200809" else codes_0510
        assert codes_of(element) == ("Unconfirmed" if expected else "Confirmed", expected), path


@pytest.mark.parametrize("version", ["00200809", "00200510"])
@pytest.mark.parametrize("name", ["NAIC", "VerificationDate"])
def test_mandatory_element_holding_elements_is_malformed(
    server, shared_or_none, version, name
) -> None:
    """Step 4 is for elements "absent, empty or blank"; one holding child elements is neither:
    the structure is schema-invalid, step 3 → IDF."""
    body = request_xml(version, naic=NAIC, key="OK-1", vin=VIN_OK)
    start = body.index(f"<{name}>") + len(name) + 2
    body = body[:start] + '<x:extra xmlns:x="urn:example"/>' + body[start:]
    resp = post(server.url(f"/iicmva/{version}"), envelope(body))
    element = response_element(resp)
    assert_valid_response(element, version, shared_or_none)
    assert codes_of(element) == ("Unconfirmed", ["IDF" if version == "00200809" else "1"])


@pytest.mark.parametrize("publication", [("00200510", "2005-10-01"), ("00200705", "2007-05-01")])
def test_auto_endpoint_policy_key_means_0809(server, shared_or_none, publication) -> None:
    """ "a PublicationVersion attribute ≥ 00200706, or a PolicyKey element, means 00200809
    rules and codes" — the PolicyKey alone decides, whatever the attribute says."""
    element = ask(server, "00200809", "/iicmva", publication=publication)
    assert_valid_response(element, "00200809", shared_or_none)
    assert element.get("PublicationVersion") == publication[0]  # echoed
    assert codes_of(element) == ("Confirmed", [])
    missing = ask(server, "00200809", "/iicmva", publication=publication, key="")
    assert codes_of(missing) == ("Unconfirmed", ["PKEY1"])  # 00200809 codes, not numeric


def test_auto_endpoint_unique_key_with_0809_attribute_is_0809(server, shared_or_none) -> None:
    """UniqueKey under a PublicationVersion ≥ 00200706: 00200809 rules, where UniqueKey is
    not part of the schema — so IDF, answered as a CoverageResponseDocument."""
    body = request_xml("00200510", naic=NAIC, key="OK-1", vin=VIN_OK).replace(
        "<CoverageRequest ",
        '<CoverageRequest PublicationVersion="00200706" PublicationDate="2007-06-01" ',
    )
    element = response_element(post(server.url("/iicmva"), envelope(body)))
    assert_valid_response(element, "00200809", shared_or_none)
    assert codes_of(element) == ("Unconfirmed", ["IDF"])


def test_size_cap_is_over_64_kib_also_when_chunked(server) -> None:
    """ "body over the size cap, default 64 KiB … 413": 65536 bytes pass, 65537 do not, with
    or without a Content-Length."""
    base = envelope(request_xml("00200809", naic=NAIC, key="OK-1", vin=VIN_OK))

    def body(size: int) -> bytes:
        padded = base.replace(
            b"</s:Body>", b"<!--" + b"x" * (size - len(base) - 7) + b"--></s:Body>"
        )
        assert len(padded) == size
        return padded

    headers = {"Content-Type": "text/xml; charset=utf-8"}
    url = server.url("/iicmva/00200809")
    assert loopback.post(url, content=body(65536), headers=headers).status_code == 200
    assert loopback.post(url, content=body(65537), headers=headers).status_code == 413
    chunks = body(65537)
    chunked = loopback.post(url, content=iter([chunks[:4096], chunks[4096:]]), headers=headers)
    assert chunked.status_code == 413
    accepted = response_element(loopback.post(url, content=iter([body(65536)]), headers=headers))
    assert codes_of(accepted) == ("Confirmed", [])


def test_maintenance_beats_malformed_requests(
    module_db_url: str, tmp_path: Path, shared_or_none
) -> None:
    """Step 1 precedes step 3: in maintenance even an empty or malformed CoverageRequest is
    SYSU [12], never a fault, on every endpoint."""
    env = {"OLV_DATABASE_URL": module_db_url, "OLV_MAINTENANCE": "1"}
    empty = '<CoverageRequest xmlns="http://www.iicmva.com/CoverageVerification/"/>'
    with soap_server(env, tmp_path) as running:
        for version in ("00200809", "00200510"):
            for path in (f"/iicmva/{version}", "/iicmva"):
                for body in (request_xml(version, day="not a date", naic=None), empty):
                    resp = post(running.url(path), envelope(body))
                    assert resp.status_code == 200, resp.text
                    element = response_element(resp)
                    # the auto endpoint reads an empty CoverageRequest by 00200510 rules
                    answered = "00200510" if (path, body) == ("/iicmva", empty) else version
                    assert_valid_response(element, answered, shared_or_none)
                    sysu = "SYSU" if answered == "00200809" else "12"
                    assert codes_of(element) == ("Unconfirmed", [sysu])


def test_today_is_the_date_in_olv_timezone(module_db_url: str, tmp_path: Path) -> None:
    """ "'Today' is the current date in the time zone OLV_TIMEZONE (default UTC)": a zone
    whose date differs from UTC's right now moves the window with it."""
    zones = [ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Etc/GMT+12")]  # UTC+14, UTC-12
    for candidate in zones:  # their dates change at 10:00 and 12:00 UTC, mid-run
        wait_past_midnight(120, candidate)
    zone = next(z for z in zones if datetime.now(z).date() != datetime.now(UTC).date())
    load_store(module_db_url, tmp_path)
    env = {"OLV_DATABASE_URL": module_db_url, "OLV_TIMEZONE": str(zone)}
    with soap_server(env, tmp_path) as running:
        local_today, local_tomorrow = day(0, zone), day(1, zone)
        for when, expected in ((local_today, []), (local_tomorrow, ["VDT1"])):
            element = ask(running, "00200809", day=f"{when.isoformat()}T12:00:00")
            assert codes_of(element)[1] == expected, (str(zone), when)


def test_soap_serve_from_any_working_directory(module_db_url: str, tmp_path: Path) -> None:
    """ "Every command works from any working directory": the service started in an empty
    directory serves its WSDLs and answers."""
    load_store(module_db_url, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = free_port()
    olv = str(Path(sys.executable).with_name("olv"))
    env = {**os.environ, "OLV_DATABASE_URL": module_db_url, "OLV_SOAP_WORKERS": "1"}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [olv, "soap", "serve", "--port", str(port)], cwd=elsewhere, env=env, stdout=log, stderr=log
    )
    running = Server(f"http://127.0.0.1:{port}", process, tmp_path / "serve.log")
    try:
        for _ in range(300):
            try:
                if loopback.get(running.url("/healthz"), timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, running.log.read_text()
            time.sleep(0.1)
        for path in ("/iicmva", "/iicmva/00200510", "/iicmva/00200809"):
            wsdl = loopback.get(running.url(path) + "?wsdl", timeout=10)
            assert wsdl.status_code == 200 and b"CoverageRequest" in wsdl.content
        assert codes_of(ask(running, "00200809")) == ("Confirmed", [])
    finally:
        running.stop()
        log.close()
    assert list(elsewhere.iterdir()) == []  # nothing written to the working directory


def _olv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return prewarmed.run(args, cwd=cwd)  # OLV_DATABASE_URL from the db_url fixture


def test_bob_error_rate_limit_is_exceeded_only_above_5_percent(db_url: str, tmp_path: Path) -> None:
    """ "exceeds the configured error rate (default 5 % of records) is rejected whole and the
    NAIC's previous master stays untouched": 2 bad of 40 (5 %) loads, 3 of 40 is rejected."""
    first = tmp_path / "Acme 20261001.txt"
    synth.write_file(first, synth.records("12345", 40, series=1))
    assert _olv("bob", "load", str(first), cwd=tmp_path).returncode == 0

    def with_bad(path: Path, bad: int) -> Path:
        lines = list(synth.records("12345", 40, series=2))
        for i in range(bad):
            lines[i] = lines[i][:299]  # one character short
        synth.write_file(path, lines)
        return path

    over = _olv("bob", "load", str(with_bad(tmp_path / "Acme 20261102.txt", 3)), cwd=tmp_path)
    assert over.returncode == 1, over.stdout + over.stderr
    stats = [json.loads(x) for x in _olv("bob", "stats", cwd=tmp_path).stdout.splitlines()]
    assert [(s["naic"], s["records"], s["file"]) for s in stats] == [
        ("12345", 40, "Acme 20261001.txt")
    ]

    at = _olv("bob", "load", str(with_bad(tmp_path / "Acme 20261101.txt", 2)), cwd=tmp_path)
    assert at.returncode == 0, at.stdout + at.stderr
    report = (tmp_path / "Acme 20261101.txt.errors.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in report if line.startswith("line ")] == [
        "line 1",
        "line 2",
    ]
    stats = [json.loads(x) for x in _olv("bob", "stats", cwd=tmp_path).stdout.splitlines()]
    assert [(s["naic"], s["records"], s["file"]) for s in stats] == [
        ("12345", 38, "Acme 20261101.txt")
    ]
    assert set(stats[0]) >= {"naic", "records", "file", "loaded_at"}


def test_bob_load_same_naic_twice_in_one_run(db_url: str, tmp_path: Path) -> None:
    """ "Two different files in one intake run that carry the same NAIC: the later one is
    rejected with a report naming the conflict" — also for one ``olv bob load`` run."""
    first, second = tmp_path / "Acme 20261101.txt", tmp_path / "Acme 20261102.txt"
    synth.write_file(first, synth.records("12345", 10, series=1))
    synth.write_file(second, synth.records("12345", 12, series=2))
    run = _olv("bob", "load", str(first), str(second), cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert [line.split(";")[0] for line in run.stdout.splitlines()] == [
        "Acme 20261101.txt: accepted",
        "Acme 20261102.txt: rejected",
    ]
    report = (tmp_path / "Acme 20261102.txt.errors.txt").read_text()
    assert "Acme 20261101.txt" in report and "12345" in report
    stats = [json.loads(x) for x in _olv("bob", "stats", cwd=tmp_path).stdout.splitlines()]
    assert [(s["naic"], s["records"], s["file"]) for s in stats] == [
        ("12345", 10, "Acme 20261101.txt")
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"<foo/>",
        b"<html><body>hello</body></html>",
        b'<Envelope><Body><CoverageRequest xmlns="http://www.iicmva.com/CoverageVerification/"/>'
        b"</Body></Envelope>",
    ],
    ids=["other-root", "html", "envelope-without-namespace"],
)
def test_not_an_envelope_is_a_client_fault(server, body: bytes) -> None:
    resp = loopback.post(
        server.url("/iicmva/00200809"), content=body, headers={"Content-Type": "text/xml"}
    )
    assert resp.status_code in (400, 500)
    fault = etree.fromstring(resp.content).find(".//faultcode")
    assert fault is not None and fault.text is not None
    assert fault.text.split(":")[-1].startswith("Client"), fault.text
