"""Hostile inputs, requester authorization, SYSU conditions and the audit trail."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import data, loopback, prewarmed
from tests.helpers.soap import (
    assert_valid_response,
    codes_of,
    days_ago,
    envelope,
    free_port,
    post,
    request_xml,
    response_element,
    soap_server,
)

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&lol3;</s:Body></s:Envelope>"""
EXTERNAL = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&xxe;</s:Body></s:Envelope>"""


@pytest.fixture(scope="module")
def policies(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The module's database with the policies loaded (once: every server here reads them)."""
    data.load_policies(module_db_url, tmp_path_factory.mktemp("policies"))
    return module_db_url


@pytest.fixture(scope="module")
def server(policies: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("hostile")
    env = {
        "OLV_DATABASE_URL": policies,
        "OLV_REQUESTER_NETWORKS": "192.0.2.0/24",
        "OLV_REQUESTER_API_KEYS": "key-one,key-two",
        "OLV_REQUESTER_CERT_SUBJECTS": "CN=dmv.example.gov,O=State of Idaho,C=US;CN=court.example.gov",
    }
    with soap_server(env, folder) as running:
        yield running


def _still_serving(server) -> None:
    resp = post(
        server.url("/iicmva/00200809"),
        envelope(request_xml("00200809")),
        headers={"X-API-Key": "key-one"},
    )
    assert codes_of(response_element(resp)) == ("Confirmed", [])


@pytest.mark.parametrize(
    ("name", "body", "soap12"),
    [
        ("not-xml", b"this is not xml", False),
        ("entity-bomb", BOMB, False),
        ("external-entity", EXTERNAL, False),
        (
            "wrong-namespace",
            envelope(request_xml("00200809").replace("www.iicmva.com", "evil.example")),
            False,
        ),
        ("not-an-envelope", request_xml("00200809").encode(), False),
        ("empty-body", envelope(""), False),
        ("no-body", b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>', False),
        ("soap12-envelope-not-allowed", envelope(request_xml("00200510"), soap12=True), True),
    ],
)
def test_bad_input_gets_a_client_fault(server, name: str, body: bytes, soap12: bool) -> None:
    path = "/iicmva/00200510" if name.startswith("soap12") else "/iicmva/00200809"
    resp = post(server.url(path), body, soap12=soap12, headers={"X-API-Key": "key-one"})
    assert resp.status_code in (400, 500)
    assert b"Fault" in resp.content
    assert b"Traceback" not in resp.content and b"root:" not in resp.content
    if name.startswith("soap12"):
        assert b"VersionMismatch" in resp.content
    elif name in ("entity-bomb", "external-entity", "not-xml", "not-an-envelope"):
        assert b"Client" in resp.content
    _still_serving(server)


def test_oversized_body_413(server) -> None:
    huge = envelope(
        request_xml("00200809").replace("</Detail>", "</Detail>" + "<!--" + "x" * (2 << 20) + "-->")
    )
    resp = post(server.url("/iicmva/00200809"), huge, headers={"X-API-Key": "key-one"})
    assert resp.status_code == 413
    _still_serving(server)


@pytest.mark.parametrize(
    ("headers", "authorized"),
    [
        ({}, False),
        ({"X-API-Key": "key-two"}, True),
        ({"X-API-Key": "wrong"}, False),
        ({"X-SSL-Client-S-DN": "CN=dmv.example.gov, O=State of Idaho, C=US"}, True),
        ({"X-SSL-Client-S-DN": "CN=court.example.gov"}, True),
        ({"X-SSL-Client-S-DN": "CN=intruder.example.com"}, False),
    ],
)
def test_requester_authorization(server, shared_or_none, headers, authorized: bool) -> None:
    for version in ("00200809", "00200510"):
        resp = post(
            server.url(f"/iicmva/{version}"), envelope(request_xml(version)), headers=headers
        )
        assert resp.status_code == 200
        element = response_element(resp)
        assert_valid_response(element, version, shared_or_none)
        expected = (
            ("Confirmed", [])
            if authorized
            else ("Unconfirmed", ["UREQ" if version == "00200809" else "6"])
        )
        assert codes_of(element) == expected


def test_cert_subject_ignored_from_untrusted_proxy(policies: str, tmp_path: Path) -> None:
    env = {
        "OLV_DATABASE_URL": policies,
        "OLV_REQUESTER_NETWORKS": "192.0.2.0/24",
        "OLV_TRUSTED_PROXIES": "192.0.2.1/32",
        "OLV_REQUESTER_CERT_SUBJECTS": "CN=court.example.gov",
    }
    with soap_server(env, tmp_path) as running:
        resp = post(
            running.url(),
            envelope(request_xml("00200809")),
            headers={"X-SSL-Client-S-DN": "CN=court.example.gov"},
        )
        assert codes_of(response_element(resp)) == ("Unconfirmed", ["UREQ"])


UNAUTHORIZED_LOOPBACK = {
    "OLV_REQUESTER_NETWORKS": "192.0.2.0/24",
    "OLV_TRUSTED_PROXIES": "192.0.2.1/32",
    "OLV_REQUESTER_API_KEYS": "k",
}


def test_unauthorized_gets_ureq_before_sysu_is_lifted(policies: str, tmp_path: Path) -> None:
    """The control for test_sysu_never_a_fault: out of maintenance, the same requests are
    UREQ without the key and answered with it."""
    full = {"OLV_DATABASE_URL": policies, **UNAUTHORIZED_LOOPBACK}
    with soap_server(full, tmp_path) as running:
        for headers, expected in (
            ({}, ("Unconfirmed", ["UREQ"])),
            ({"X-API-Key": "whatever"}, ("Unconfirmed", ["UREQ"])),
            ({"X-Forwarded-For": "192.0.2.9"}, ("Unconfirmed", ["UREQ"])),
            ({"X-API-Key": "k"}, ("Confirmed", [])),
        ):
            resp = post(running.url(), envelope(request_xml("00200809")), headers=headers)
            assert codes_of(response_element(resp)) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"OLV_MAINTENANCE": "1"},
        {"OLV_DEADLINE_SECONDS": "0.000001"},
        {"OLV_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:{closed}/none"},
    ],
    ids=["maintenance", "deadline", "database-down"],
)
def test_sysu_never_a_fault(module_db_url: str, tmp_path: Path, shared_or_none, env) -> None:
    env = {k: v.format(closed=free_port()) for k, v in env.items()}
    # Loopback is neither an allowed network nor a trusted proxy here: without the key, every
    # request below is unauthorized (test_unauthorized_gets_ureq_before_sysu_is_lifted shows
    # the same configuration answering UREQ).
    full = {"OLV_DATABASE_URL": module_db_url, **UNAUTHORIZED_LOOPBACK, **env}
    with soap_server(full, tmp_path) as running:
        for version in ("00200809", "00200510"):
            # Even an unauthorized requester gets SYSU first: step 1 precedes step 2.
            for headers in ({}, {"X-API-Key": "whatever"}, {"X-API-Key": "k"}):
                resp = post(
                    running.url(f"/iicmva/{version}"),
                    envelope(request_xml(version)),
                    headers=headers,
                )
                assert resp.status_code == 200
                element = response_element(resp)
                assert_valid_response(element, version, shared_or_none)
                assert codes_of(element) == (
                    "Unconfirmed",
                    ["SYSU" if version == "00200809" else "12"],
                )


def _olv(*args: str, url: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return prewarmed.run(args, {**os.environ, "OLV_DATABASE_URL": url}, stdin=stdin, timeout=60)


def test_audit_every_query_and_graceful_stop_loses_none(db_url: str, tmp_path: Path) -> None:
    data.load_policies(db_url, tmp_path)
    env = {
        "OLV_DATABASE_URL": db_url,
        "OLV_AUDIT_FLUSH_SECONDS": "30",
        "OLV_REQUESTER_API_KEYS": "k",
    }
    with soap_server(env, tmp_path) as running:
        for key in ("P-OK", "NOPE", "UNKNOWN"):
            post(
                running.url(),
                envelope(request_xml("00200809", key=key)),
                headers={"X-API-Key": "k"},
            )
        post(
            running.url("/iicmva/00200510"), envelope(request_xml("00200510", vin=data.VIN_EXPIRED))
        )
        # the flush interval is 30 s: only the graceful stop can have written these rows
        assert running.stop() == 0
    shown = _olv("audit", "show", url=db_url)
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert len(rows) == 4
    first = rows[0]
    assert set(first) == {
        "time",
        "requester",
        "version",
        "naic",
        "policy_key",
        "vin",
        "verification_date",
        "request_reason",
        "response_code",
        "reason_codes",
        "latency_ms",
    }
    assert first["requester"].startswith("api-key:") and first["requester"][-1:] != "k"
    assert [r["reason_codes"] for r in rows[:3]] == [[], ["VIN3"], []]
    assert rows[3]["version"] == "00200510" and rows[3]["reason_codes"] == ["PKEY4"]
    by_vin = _olv("audit", "show", "--vin", data.VIN_EXPIRED.lower(), url=db_url)
    assert len(by_vin.stdout.splitlines()) == 1
    future = _olv("audit", "show", "--since", "2999-01-01", url=db_url)
    assert future.stdout == ""
    bad = _olv("audit", "show", "--since", "yesterday", url=db_url)
    assert bad.returncode != 0 and "YYYY-MM-DD" in bad.stderr
    kept = _olv("audit", "purge", "--older-than", "1", url=db_url)
    assert kept.returncode == 0 and kept.stdout.startswith("0 ")
    assert len(_olv("audit", "show", url=db_url).stdout.splitlines()) == 4


def test_logs_hold_no_insured_data(db_url: str, tmp_path: Path) -> None:
    data.load_policies(db_url, tmp_path)
    with soap_server({"OLV_DATABASE_URL": db_url}, tmp_path) as running:
        post(running.url(), envelope(request_xml("00200809")))
        post(running.url(), b"<broken")
        log = running.log
    text = log.read_text()
    assert data.VIN_OK not in text and "P-OK" not in text


def test_healthz_and_unknown_paths(server) -> None:
    assert loopback.get(server.url("/healthz")).status_code == 200
    assert loopback.get(server.url("/nowhere")).status_code == 404
    assert loopback.get(server.url("/iicmva")).status_code == 405


def test_configured_naics_and_window(policies: str, tmp_path: Path) -> None:
    env = {
        "OLV_DATABASE_URL": policies,
        "OLV_NAICS": data.OTHER_NAIC,  # 10001 is in the store but not served here
        "OLV_VERIFY_PAST_DAYS": "10",
        "OLV_VERIFY_FUTURE_DAYS": "30",
    }
    with soap_server(env, tmp_path) as running:

        def codes(**overrides: object) -> tuple[str, list[str]]:
            body = envelope(request_xml("00200809", **overrides))  # type: ignore[arg-type]
            return codes_of(response_element(post(running.url(), body)))

        assert codes() == ("Unconfirmed", ["NAIC2"])
        other = {"naic": data.OTHER_NAIC, "key": "P-OTHER", "vin": data.VIN_NOWHERE}
        assert codes(**other) == ("Confirmed", [])
        assert codes(**other, day=days_ago(-30)) == ("Confirmed", [])
        assert codes(**other, day=days_ago(-31)) == ("Unconfirmed", ["VDT1"])
        assert codes(**other, day=days_ago(10)) == ("Confirmed", [])
        assert codes(**other, day=days_ago(11)) == ("Unconfirmed", ["VDT1"])


MALFORMED = {
    "empty-request": lambda version: (
        '<CoverageRequest xmlns="http://www.iicmva.com/CoverageVerification/"/>'
    ),
    "bad-date": lambda version: request_xml(version, day="yesterday"),
    "naic-not-digits": lambda version: request_xml(version, naic="ABCDE"),
    "no-policy-state": lambda version: request_xml(version, state=None),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("path", ["/iicmva/00200510", "/iicmva/00200809"])
def test_unauthorized_gets_ureq_before_idf(server, shared_or_none, case: str, path: str) -> None:
    """Step 2 precedes step 3: a malformed request from an unauthorized requester is UREQ, and
    the same request with a valid key is IDF (so the request really is malformed)."""
    version = path.rsplit("/", 1)[1]
    body = envelope(MALFORMED[case](version))
    unauthorized = response_element(post(server.url(path), body))
    assert_valid_response(unauthorized, version, shared_or_none)
    ureq, idf = ("UREQ", "IDF") if version == "00200809" else ("6", "1")
    assert codes_of(unauthorized) == ("Unconfirmed", [ureq])
    authorized = response_element(post(server.url(path), body, headers={"X-API-Key": "key-one"}))
    assert codes_of(authorized) == ("Unconfirmed", [idf])


@pytest.mark.parametrize("path", ["/iicmva", "/iicmva/00200510", "/iicmva/00200809"])
def test_empty_coverage_request_gets_a_valid_idf_answer(server, shared_or_none, path: str) -> None:
    body = envelope('<CoverageRequest xmlns="http://www.iicmva.com/CoverageVerification/"/>')
    resp = post(server.url(path), body, headers={"X-API-Key": "key-one"})
    assert resp.status_code == 200
    element = response_element(resp)
    version = "00200809" if path.endswith("00200809") else "00200510"
    assert_valid_response(element, version, shared_or_none)
    assert codes_of(element) == ("Unconfirmed", ["IDF" if version == "00200809" else "1"])
