"""The shipped nginx file in front of a real ``olv soap serve``: no client header talks past it.

nginx runs from ``deploy/nginx/olv-soap.conf`` itself, with only the addresses, ports and
certificate paths replaced; the test certificates come from a throw-away CA. Skips (with the
reason) when no nginx binary is installed; ``scripts/test`` installs one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

from tests.helpers import data
from tests.helpers.soap import codes_of, envelope, free_port, request_xml, response_element
from tests.helpers.soap import soap_server as start_soap

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "deploy" / "nginx" / "olv-soap.conf"
SUBJECT = "CN=court.example.gov,O=State of Idaho,C=US"
ALLOWED = "10.1.2.3"
CONFIRMED = ("Confirmed", [])
UREQ = ("Unconfirmed", ["UREQ"])


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.skip("nginx is not installed (scripts/test installs it); shipped config untested")
    return found


def _name(common: str, *, state: bool = False) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]
    if state:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "State of Idaho"))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(parts)


def _issue(
    folder: Path,
    stem: str,
    subject: x509.Name,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    **ext: bool,
) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if ext.get("server"):
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return subject, key


def _render(folder: Path, listen: int, upstream: int) -> Path:
    shipped = CONF.read_text()
    swaps = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream};",
        "listen 443 ssl;": f"listen 127.0.0.1:{listen} ssl;",
        "/etc/olv/tls/server.crt": str(folder / "server.crt"),
        "/etc/olv/tls/server.key": str(folder / "server.key"),
        "/etc/olv/tls/state-clients-ca.pem": str(folder / "ca.crt"),
    }
    for old, new in swaps.items():
        assert old in shipped, f"the shipped config no longer holds {old!r}; update this test"
        shipped = shipped.replace(old, new)
    (folder / "olv-soap.conf").write_text(shipped)
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = folder / "nginx.conf"
    main.write_text(
        "daemon off;\nmaster_process off;\n"
        f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} warn;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n    access_log off;\n{temp}\n    include {folder / 'olv-soap.conf'};\n}}\n"
    )
    return main


@pytest.fixture(scope="module")
def front(
    module_db_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    binary = _nginx()
    folder = tmp_path_factory.mktemp("nginx")
    ca = _issue(folder, "ca", _name("Test States CA"), None)
    _issue(folder, "server", _name("olv.insurer.example"), ca, server=True)
    _issue(folder, "client", _name("court.example.gov", state=True), ca)
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
        config = _render(folder, port, int(upstream.base.rsplit(":", 1)[1]))
        check = subprocess.run(
            [binary, "-t", "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.returncode == 0, check.stderr
        process = subprocess.Popen(
            [binary, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"https://127.0.0.1:{port}"
            deadline = time.monotonic() + 15
            while True:
                try:
                    httpx.get(f"{base}/iicmva?wsdl", verify=_tls(folder, False), timeout=1)
                    break
                except httpx.TransportError:
                    assert process.poll() is None, (folder / "error.log").read_text()
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.1)
            yield base, folder
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


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
