"""The shipped nginx file in front of a real ``olv soap serve``: no client header talks past it.

nginx runs from ``deploy/nginx/olv-soap.conf`` itself, with only the addresses, ports and
certificate paths replaced (both upstream servers name the one SOAP server); the test certificates come from a throw-away CA. Skips (with the
reason) when no nginx binary is installed; ``scripts/test`` installs one.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.helpers import data
from tests.helpers.free_ports import free_port
from tests.helpers.nginx import (
    SOAP_CONF,
    cert_name,
    issue_cert,
    nginx_binary,
    render,
    running_nginx,
    soap_swaps,
)
from tests.helpers.soap import codes_of, envelope, request_xml, response_element
from tests.helpers.soap import soap_server as start_soap

SUBJECT = "CN=court.example.gov,O=State of Idaho,C=US"
ALLOWED = "10.1.2.3"
CONFIRMED = ("Confirmed", [])
UREQ = ("Unconfirmed", ["UREQ"])


@pytest.fixture(scope="module")
def front(
    module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    nginx_binary()
    folder = tmp_path_factory.mktemp("nginx")
    ca = issue_cert(folder, "ca", cert_name("Test States CA"), None)
    issue_cert(folder, "server", cert_name("olv.insurer.example"), ca, server=True)
    issue_cert(folder, "client", cert_name("court.example.gov", state=True), ca)
    data.load_policies(module_db_url, folder)
    env = {
        "OLV_DATABASE_URL": module_db_url,
        "OLV_REQUESTER_NETWORKS": "10.0.0.0/8",
        "OLV_TRUSTED_PROXIES": "127.0.0.1/32",
        "OLV_REQUESTER_CERT_SUBJECTS": SUBJECT,
        "OLV_REQUESTER_API_KEYS": "key-one",
    }
    with start_soap(env, folder) as upstream:
        port = free_port()
        upstream_port = int(upstream.base.rsplit(":", 1)[1])
        conf = render(SOAP_CONF, soap_swaps(folder, port, [upstream_port]), folder)
        base = f"https://127.0.0.1:{port}"

        def ready() -> None:
            httpx.get(f"{base}/iicmva?wsdl", verify=_tls(folder, False), timeout=1)

        with running_nginx(folder, [conf], ready):
            yield base, folder


def _tls(folder: Path, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    if client_cert:
        context.load_cert_chain(str(folder / "client.crt"), str(folder / "client.key"))
    return context


def _answer(front: tuple[str, Path], headers: dict[str, str], client_cert: bool = False):
    base, folder = front
    with httpx.Client(verify=_tls(folder, client_cert), timeout=10) as client:
        resp = client.post(
            f"{base}/iicmva",
            content=envelope(request_xml("00200809")),
            headers={"Content-Type": "text/xml; charset=utf-8", **headers},
        )
    assert resp.status_code == 200, resp.text
    return codes_of(response_element(resp))


@pytest.mark.parametrize(
    ("headers", "client_cert", "expected"),
    [
        pytest.param({}, True, CONFIRMED, id="verified-certificate"),
        pytest.param({"X-API-Key": "key-one"}, False, CONFIRMED, id="api-key"),
        pytest.param({}, False, UREQ, id="nothing"),
        pytest.param({"X-SSL-Client-S-DN": SUBJECT}, False, UREQ, id="subject-header"),
        pytest.param({"X_SSL_Client_S_DN": SUBJECT}, False, UREQ, id="subject-underscore"),
        pytest.param({"X-Forwarded-For": ALLOWED}, False, UREQ, id="x-forwarded-for"),
        pytest.param({"X_Forwarded_For": ALLOWED}, False, UREQ, id="x_forwarded_for"),
        pytest.param({"Forwarded": f"for={ALLOWED}"}, False, UREQ, id="forwarded"),
        pytest.param({"X-Real-IP": ALLOWED}, False, UREQ, id="x-real-ip"),
        pytest.param(
            {"X-SSL-Client-S-DN": "CN=intruder.example.com"}, True, CONFIRMED, id="cert-wins"
        ),
    ],
)
def test_no_client_header_passes_the_shipped_nginx(front, headers, client_cert, expected) -> None:
    assert _answer(front, headers, client_cert) == expected


def test_wsdl_through_nginx_names_https(front) -> None:
    base, folder = front
    headers = {"Host": "olv.insurer.example", "X-Forwarded-Proto": "http"}
    resp = httpx.get(f"{base}/iicmva/00200510?wsdl", headers=headers, verify=_tls(folder, False))
    root = etree.fromstring(resp.content)
    locations = [
        a.get("location") for a in root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")
    ]
    assert locations == ["https://olv.insurer.example/iicmva/00200510"]
