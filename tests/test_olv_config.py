"""Settings parsing (SPEC §3 names) and the requester rules built on them."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from olv.config import Settings, get_settings
from service.auth import Identities, identify


def test_settings_default_to_sqlite_a_183_day_window_and_loopback_requesters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = get_settings()
    assert s.database_url == "sqlite:///olv.db"
    assert (s.verify_past_days, s.verify_future_days, s.maintenance) == (183, 0, False)
    assert s.naics == [] and s.requester_api_keys == []
    assert ipaddress.ip_network("127.0.0.0/8") in s.requester_networks
    assert s.max_body_bytes == 64 * 1024 and s.deadline_seconds == 4.5


def test_lists_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLV_NAICS", "12345, 67890")
    monkeypatch.setenv("OLV_REQUESTER_NETWORKS", "10.1.0.0/16,2001:db8::/32")
    monkeypatch.setenv("OLV_REQUESTER_API_KEYS", "a,b")
    monkeypatch.setenv("OLV_REQUESTER_CERT_SUBJECTS", "CN=a,O=State,C=US;CN=b")
    monkeypatch.setenv("OLV_MAINTENANCE", "1")
    s = Settings()
    assert s.naics == ["12345", "67890"]
    assert s.requester_networks == [
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    assert s.requester_api_keys == ["a", "b"]
    assert s.requester_cert_subjects == ["CN=a,O=State,C=US", "CN=b"]
    assert s.maintenance is True


def test_empty_network_list_allows_no_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLV_REQUESTER_NETWORKS", "")
    s = Settings()
    assert s.requester_networks == []
    assert not identify({"REMOTE_ADDR": "127.0.0.1"}, s).authorized


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OLV_TIMEZONE", "Mars/Olympus"),
        ("OLV_REQUESTER_NETWORKS", "not-a-net"),
        ("OLV_VERIFY_PAST_DAYS", "-1"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, ValueError)):
        Settings()


def test_identity_rules() -> None:
    s = Settings(
        requester_networks=[ipaddress.ip_network("192.0.2.0/24")],
        requester_api_keys=["sekret"],
        requester_cert_subjects=["CN=dmv,O=State"],
    )
    assert identify({"REMOTE_ADDR": "192.0.2.9"}, s).identity == "ip:192.0.2.9"
    assert identify({"REMOTE_ADDR": "::ffff:192.0.2.9"}, s).authorized
    by_key = identify({"REMOTE_ADDR": "198.51.100.1", "HTTP_X_API_KEY": "sekret"}, s)
    assert by_key.authorized and "sekret" not in by_key.identity
    by_cert = identify({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_SSL_CLIENT_S_DN": "cn=dmv, O=State"}, s)
    assert by_cert.authorized and by_cert.identity.startswith("cert:")
    spoofed = identify(
        {"REMOTE_ADDR": "198.51.100.1", "HTTP_X_SSL_CLIENT_S_DN": "CN=dmv,O=State"}, s
    )
    assert not spoofed.authorized


def test_remembered_identities_answer_as_identify() -> None:
    """The per-process memory of requesters never mixes two requests that differ in anything
    identify reads: each environ gets identify's own answer, asked first or again."""
    s = Settings(
        requester_networks=[ipaddress.ip_network("192.0.2.0/24")],
        requester_api_keys=["sekret"],
        requester_cert_subjects=["CN=dmv,O=State"],
        trusted_proxies=[ipaddress.ip_network("127.0.0.0/8")],
    )
    environs = [
        {"REMOTE_ADDR": "127.0.0.1"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.9"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_FORWARDED": "for=192.0.2.10"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "192.0.2.11"},
        {
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_X_REAL_IP": "192.0.2.9",
            "HTTP_FORWARDED": "for=1.2.3.4",
        },
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_API_KEY": "sekret"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_API_KEY": "other"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_SSL_CLIENT_S_DN": "CN=dmv,O=State"},
        {"REMOTE_ADDR": "192.0.2.9"},
    ]
    remembered = Identities(s)
    expected = [identify(e, s) for e in environs]
    assert len({r for r in expected}) == len(environs)  # every input read makes a difference
    for _ in range(2):
        assert [remembered(e) for e in environs] == expected
