"""A real nginx running the shipped files of ``deploy/nginx`` for tests.

The shipped file is used as it is, with only addresses, ports and certificate paths replaced
(:func:`render` refuses a swap the file no longer holds, so a changed file fails loudly instead
of being tested half-adapted). :func:`running_nginx` wraps the rendered files in a minimal main
configuration (foreground, one process, files under the test's folder), checks it with
``nginx -t`` and starts it. Certificates come from a throw-away CA (:func:`issue_cert`).

Without an nginx binary the test skips with the reason; ``scripts/test`` installs one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers.soap import START_SECONDS

REPO = Path(__file__).resolve().parents[2]
SOAP_CONF = REPO / "deploy" / "nginx" / "olv-soap.conf"
PORTAL_CONF = REPO / "deploy" / "nginx" / "olv-portal.conf"
# The application hosts the shipped upstream blocks name, in order; tests put loopback ports
# in their place.
SOAP_HOSTS = ("10.0.1.11:8080", "10.0.1.12:8080")
PORTAL_HOSTS = ("10.0.2.11:8000", "10.0.2.12:8000")

Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        print("skipping: nginx is not installed (scripts/test installs it)")
        pytest.skip("nginx is not installed (scripts/test installs it); shipped config untested")
    return found


def cert_name(common: str, *, state: bool = False) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]
    if state:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "State of Idaho"))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(parts)


def issue_cert(
    folder: Path, stem: str, subject: x509.Name, issuer: Issuer | None, *, server: bool = False
) -> Issuer:
    """``stem``.crt and ``stem``.key in ``folder``, signed by ``issuer`` (self-signed CA when
    None); a server certificate names 127.0.0.1."""
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
    if server:
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


def render(shipped: Path, swaps: dict[str, str], folder: Path) -> Path:
    """The shipped file with each ``swaps`` key replaced, written into ``folder``."""
    text = shipped.read_text()
    for old, new in swaps.items():
        assert old in text, f"the shipped config no longer holds {old!r}; update the test"
        text = text.replace(old, new)
    target = folder / shipped.name
    target.write_text(text)
    return target


def upstream_swaps(hosts: tuple[str, ...], ports: list[int]) -> dict[str, str]:
    """The shipped upstream servers replaced by loopback ``ports`` (one port for every server
    when only one is given)."""
    chosen = ports if len(ports) == len(hosts) else [ports[0]] * len(hosts)
    return {
        f"server {host}": f"server 127.0.0.1:{port}"
        for host, port in zip(hosts, chosen, strict=True)
    }


def soap_swaps(folder: Path, listen: int, upstreams: list[int]) -> dict[str, str]:
    return {
        **upstream_swaps(SOAP_HOSTS, upstreams),
        "listen 443 ssl;": f"listen 127.0.0.1:{listen} ssl;",
        "/etc/olv/tls/server.crt": str(folder / "server.crt"),
        "/etc/olv/tls/server.key": str(folder / "server.key"),
        "/etc/olv/tls/state-clients-ca.pem": str(folder / "ca.crt"),
    }


def portal_swaps(folder: Path, listen: int, plain: int, upstreams: list[int]) -> dict[str, str]:
    return {
        **upstream_swaps(PORTAL_HOSTS, upstreams),
        "listen 443 ssl;": f"listen 127.0.0.1:{listen} ssl;",
        "listen 80;": f"listen 127.0.0.1:{plain};",
        "/etc/olv/tls/portal.crt": str(folder / "server.crt"),
        "/etc/olv/tls/portal.key": str(folder / "server.key"),
    }


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    folder: Path

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text() if path.exists() else ""


@contextmanager
def running_nginx(folder: Path, confs: list[Path], ready: Callable[[], object]) -> Iterator[Nginx]:
    """nginx serving ``confs`` (in its http context), yielded once ``ready()`` returns without
    an ``httpx.TransportError``; stopped afterwards."""
    binary = nginx_binary()
    temp = "\n".join(
        f"    {kind}_temp_path {folder / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    includes = "\n".join(f"    include {conf};" for conf in confs)
    main = folder / "nginx.conf"
    main.write_text(
        "daemon off;\nmaster_process off;\n"
        f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} warn;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n    access_log off;\n{temp}\n{includes}\n}}\n"
    )
    command = [binary, "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(main)]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nginx = Nginx(process, folder)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                ready()
                break
            except httpx.TransportError:
                assert process.poll() is None, nginx.error_log()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        yield nginx
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
