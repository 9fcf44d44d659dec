"""Who is asking (SPEC §3): the TCP peer, or what a trusted proxy wrote; never a client's claim.

Every case goes through a real ``olv soap serve`` over real HTTP. All traffic comes from
loopback, so two servers play the two roles: in one, loopback is *not* a trusted proxy (a
client that connects directly); in the other, loopback is the trusted proxy (a TLS
terminator on the same host) and the forwarding headers stand for what that proxy wrote.
Neither lets loopback in by its own address, so a Confirmed can only come from the rule
under test.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from olv import forwarding
from olv.config import Settings
from tests.helpers import data, loopback
from tests.helpers.soap import codes_of, envelope, post, request_xml, response_element, soap_server

ALLOWED = "10.1.2.3"  # in OLV_REQUESTER_NETWORKS
DISALLOWED = "198.51.100.7"
SUBJECT = "CN=court.example.gov,O=State of Idaho,C=US"
KEY = "key-one"
COMMON = {
    "OLV_REQUESTER_NETWORKS": "10.0.0.0/8,2001:db8::/32",
    "OLV_REQUESTER_API_KEYS": KEY,
    "OLV_REQUESTER_CERT_SUBJECTS": SUBJECT,
}
DIRECT = {**COMMON, "OLV_TRUSTED_PROXIES": "192.0.2.0/24"}  # loopback is an ordinary client
PROXIED = {**COMMON, "OLV_TRUSTED_PROXIES": "127.0.0.0/8,::1/128"}  # loopback is the proxy

CONFIRMED = ("Confirmed", [])
UREQ = ("Unconfirmed", ["UREQ"])


@pytest.fixture(scope="module")
def direct(module_db_url: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("direct")
    data.load_policies(module_db_url, folder)
    with soap_server({"OLV_DATABASE_URL": module_db_url, **DIRECT}, folder) as running:
        yield running


@pytest.fixture(scope="module")
def proxied(module_db_url: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("proxied")
    with soap_server({"OLV_DATABASE_URL": module_db_url, **PROXIED}, folder) as running:
        yield running


def _answer(server, headers: dict[str, str]) -> tuple[str, list[str]]:
    resp = post(server.url(), envelope(request_xml("00200809")), headers=headers)
    assert resp.status_code == 200, resp.text
    return codes_of(response_element(resp))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, UREQ, id="nothing"),
        pytest.param({"X-Forwarded-For": ALLOWED}, UREQ, id="x-forwarded-for"),
        pytest.param({"Forwarded": f"for={ALLOWED}"}, UREQ, id="forwarded"),
        pytest.param({"X-Real-IP": ALLOWED}, UREQ, id="x-real-ip"),
        pytest.param({"X_Forwarded_For": ALLOWED}, UREQ, id="x_forwarded_for"),
        pytest.param({"X-SSL-Client-S-DN": SUBJECT}, UREQ, id="subject-not-from-a-proxy"),
        pytest.param({"X_SSL_Client_S_DN": SUBJECT}, UREQ, id="x_ssl_client_s_dn"),
        pytest.param({"X_API_Key": KEY}, UREQ, id="x_api_key"),
        pytest.param({"X-API-Key": "wrong"}, UREQ, id="wrong-api-key"),
        pytest.param({"X-API-Key": KEY}, CONFIRMED, id="api-key"),
    ],
)
def test_a_direct_client_cannot_claim_another_identity(direct, headers, expected) -> None:
    assert _answer(direct, headers) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({}, UREQ, id="the-proxy-itself-is-not-a-requester"),
        pytest.param({"X-Forwarded-For": ALLOWED}, CONFIRMED, id="xff-allowed"),
        pytest.param({"X-Forwarded-For": DISALLOWED}, UREQ, id="xff-disallowed"),
        pytest.param({"X-Forwarded-For": f"{ALLOWED}, {DISALLOWED}"}, UREQ, id="xff-leftmost"),
        pytest.param({"X-Forwarded-For": f"{DISALLOWED}, {ALLOWED}"}, CONFIRMED, id="xff-appended"),
        pytest.param({"X-Forwarded-For": "unknown"}, UREQ, id="xff-not-an-address"),
        pytest.param({"Forwarded": f"for={ALLOWED};proto=https"}, CONFIRMED, id="fwd-allowed"),
        pytest.param({"Forwarded": f"for={DISALLOWED}"}, UREQ, id="fwd-disallowed"),
        pytest.param({"Forwarded": f"for={ALLOWED}, for={DISALLOWED}"}, UREQ, id="fwd-leftmost"),
        pytest.param(
            {"Forwarded": 'for="[2001:db8::17]:4711"'}, CONFIRMED, id="fwd-ipv6-with-port"
        ),
        pytest.param({"Forwarded": "for=_hidden"}, UREQ, id="fwd-obfuscated"),
        pytest.param({"X-Real-IP": ALLOWED}, CONFIRMED, id="real-ip-allowed"),
        pytest.param({"X-Real-IP": DISALLOWED}, UREQ, id="real-ip-disallowed"),
        pytest.param(
            {"X-Forwarded-For": DISALLOWED, "X-Real-IP": ALLOWED}, UREQ, id="headers-disagree"
        ),
        pytest.param(
            {"X-Forwarded-For": DISALLOWED, "Forwarded": f"for={ALLOWED}"},
            UREQ,
            id="passed-through-forwarded",
        ),
        pytest.param({"X_Forwarded_For": ALLOWED}, UREQ, id="x_forwarded_for"),
        pytest.param({"X_Real_IP": ALLOWED}, UREQ, id="x_real_ip"),
        pytest.param({"X-SSL-Client-S-DN": SUBJECT}, CONFIRMED, id="subject"),
        pytest.param(
            {"X-SSL-Client-S-DN": "cn=court.example.gov, O=State of Idaho, C=US"},
            CONFIRMED,
            id="subject-spaced",
        ),
        pytest.param({"X-SSL-Client-S-DN": "CN=intruder.example.com"}, UREQ, id="subject-other"),
        pytest.param({"X_SSL_Client_S_DN": SUBJECT}, UREQ, id="x_ssl_client_s_dn"),
        pytest.param({"X_API_Key": KEY}, UREQ, id="x_api_key"),
        pytest.param({"X-API-Key": "wrong"}, UREQ, id="wrong-api-key"),
        pytest.param({"X-API-Key": KEY}, CONFIRMED, id="api-key"),
    ],
)
def test_behind_a_trusted_proxy_only_what_it_wrote_counts(proxied, headers, expected) -> None:
    assert _answer(proxied, headers) == expected


def test_underscore_spelling_does_not_override_the_real_header(proxied) -> None:
    # Both spellings map to the same CGI name; the underscore one must not win or merge.
    both = {"X-SSL-Client-S-DN": "CN=intruder.example.com", "X_SSL_Client_S_DN": SUBJECT}
    assert _answer(proxied, both) == UREQ
    mixed = {"X-Forwarded-For": DISALLOWED, "X_Forwarded_For": ALLOWED}
    assert _answer(proxied, mixed) == UREQ


def _answer_to_listed(server, headers: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """As :func:`_answer`, with headers that may repeat a name."""
    resp = loopback.post(
        server.url(),
        content=envelope(request_xml("00200809")),
        headers=[("Content-Type", "text/xml; charset=utf-8"), *headers],
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return codes_of(response_element(resp))


def test_a_credential_header_sent_twice_counts_as_none(proxied) -> None:
    # Joined, the two halves would spell the allowed subject (SUBJECT's "CN=..." and
    # "O=...,C=US"): a proxy that adds its header after the client's would let them in.
    first, rest = SUBJECT.split(",", 1)
    for repeated in (
        [("X-SSL-Client-S-DN", first), ("X-SSL-Client-S-DN", rest)],
        [("X-SSL-Client-S-DN", SUBJECT), ("X-SSL-Client-S-DN", SUBJECT)],
        [("X-API-Key", KEY), ("X-API-Key", KEY)],
    ):
        assert _answer_to_listed(proxied, repeated) == UREQ, repeated
    # Sent once, each still lets the request past the check (whatever the policy's answer).
    assert "UREQ" not in _answer(proxied, {"X-SSL-Client-S-DN": SUBJECT})[1]
    assert "UREQ" not in _answer(proxied, {"X-API-Key": KEY})[1]
    # A list header sent twice is one list, as HTTP has it: the proxy chain, read from the
    # right (the address the trusted proxy appended last).
    chain = [("X-Forwarded-For", DISALLOWED), ("X-Forwarded-For", ALLOWED)]
    assert "UREQ" not in _answer_to_listed(proxied, chain)[1]
    assert _answer_to_listed(proxied, chain[::-1]) == UREQ


def _audit_requesters(url: str) -> list[str]:
    shown = subprocess.run(
        [sys.executable, "-m", "olv", "audit", "show"],
        env={**os.environ, "OLV_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line)["requester"] for line in shown.stdout.splitlines()]


def test_the_audit_records_the_real_source(db_url: str, tmp_path: Path) -> None:
    data.load_policies(db_url, tmp_path)
    with soap_server({"OLV_DATABASE_URL": db_url, **DIRECT}, tmp_path) as running:
        assert _answer(running, {"X-Forwarded-For": ALLOWED}) == UREQ
        assert _answer(running, {"X-API-Key": KEY, "X-Real-IP": ALLOWED}) == CONFIRMED
        assert _answer(running, {"X-SSL-Client-S-DN": SUBJECT}) == UREQ
        assert running.stop() == 0
    with soap_server({"OLV_DATABASE_URL": db_url, **PROXIED}, tmp_path) as running:
        forwarded = {"X-Forwarded-For": f"{DISALLOWED}, {ALLOWED}"}
        assert _answer(running, forwarded) == CONFIRMED
        assert _answer(running, {**forwarded, "X-API-Key": KEY}) == CONFIRMED
        assert _answer(running, {"X-Forwarded-For": DISALLOWED, "X-Real-IP": ALLOWED}) == UREQ
        assert _answer(running, {"X-Forwarded-For": ALLOWED, "X-SSL-Client-S-DN": SUBJECT}) == (
            CONFIRMED
        )
        assert running.stop() == 0
    rows = _audit_requesters(db_url)
    assert len(rows) == 7
    direct_rows, proxied_rows = rows[:3], rows[3:]
    assert direct_rows[0] == "ip:127.0.0.1"
    assert direct_rows[1].startswith("api-key:") and direct_rows[1].endswith(" ip:127.0.0.1")
    assert KEY not in direct_rows[1]
    # A subject from a client that is not a proxy is not even recorded as a claim.
    assert direct_rows[2] == "ip:127.0.0.1"
    assert proxied_rows[0] == f"ip:{ALLOWED} via:127.0.0.1"
    assert proxied_rows[1].startswith("api-key:")
    assert proxied_rows[1].endswith(f" ip:{ALLOWED} via:127.0.0.1")
    assert proxied_rows[2] == "ip:unknown via:127.0.0.1"
    assert proxied_rows[3] == f"cert:{SUBJECT} ip:{ALLOWED} via:127.0.0.1"
    assert not any(DISALLOWED in row for row in rows)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"HTTP_X_FORWARDED_FOR": "10.1.2.3:5555"}, "ip:10.1.2.3 via:127.0.0.1"),
        ({"HTTP_X_FORWARDED_FOR": "::ffff:10.1.2.3"}, "ip:10.1.2.3 via:127.0.0.1"),
        ({"HTTP_X_FORWARDED_FOR": "[2001:db8::1]:80"}, "ip:2001:db8::1 via:127.0.0.1"),
        ({"HTTP_FORWARDED": 'For="[2001:db8::1]";proto=https'}, "ip:2001:db8::1 via:127.0.0.1"),
        ({"HTTP_FORWARDED": "proto=https"}, "ip:unknown via:127.0.0.1"),
        (
            {"HTTP_X_FORWARDED_FOR": "10.1.2.3", "HTTP_FORWARDED": 'for="[::ffff:10.1.2.3]"'},
            "ip:10.1.2.3 via:127.0.0.1",
        ),
        (
            {"HTTP_X_REAL_IP": "10.1.2.3", "HTTP_FORWARDED": "for=10.1.2.4"},
            "ip:unknown via:127.0.0.1",
        ),
        ({"HTTP_X_REAL_IP": "1" * 100}, "ip:unknown via:127.0.0.1"),
        ({}, "ip:127.0.0.1"),
    ],
)
def test_forwarded_address_forms(headers: dict[str, str], expected: str) -> None:
    settings = Settings(trusted_proxies=[ipaddress.ip_network("127.0.0.0/8")])
    assert forwarding.source({"REMOTE_ADDR": "127.0.0.1", **headers}, settings).describe() == (
        expected
    )
    # The same headers from a peer that is no proxy name only that peer.
    untrusted = {"REMOTE_ADDR": "198.51.100.9", **headers}
    assert forwarding.source(untrusted, settings).describe() == "ip:198.51.100.9"
