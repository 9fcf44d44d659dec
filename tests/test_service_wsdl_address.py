"""The service address in served WSDLs (SPEC §3 ``OLV_PUBLIC_URL``), through a real server.

Generated clients post wherever the WSDL says, so behind a TLS terminator the address must be
the public one, whatever Host the request carried; without ``OLV_PUBLIC_URL`` the request's
own host is used, and a spoofed Host must neither break the document nor grow the cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from lxml import etree

import xsd
from olv import db
from tests.helpers import loopback
from tests.helpers.free_ports import free_port
from tests.helpers.soap import soap_server

SOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
SOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
PUBLIC = "https://olv.insurer.example:8443/verify"
# Each endpoint's WSDL URLs: the auto-detecting endpoint serves either version.
WSDLS = [
    ("/iicmva", "?wsdl"),
    ("/iicmva", "?WSDL"),
    ("/iicmva", "?wsdl&version=00200510"),
    ("/iicmva", "?wsdl&version=00200809"),
    ("/iicmva/00200510", "?wsdl"),
    ("/iicmva/00200809", "?wsdl"),
]


def _sqlite(folder: Path) -> str:
    url = f"sqlite:///{folder / 'olv.db'}"
    db.upgrade(url)  # the WSDL never touches the store, but the server starts only on a schema
    return url


def _locations(url: str, headers: dict[str, str] | None = None) -> list[str]:
    resp = loopback.get(url, headers=headers or {}, timeout=10)
    assert resp.status_code == 200, resp.text
    root = etree.fromstring(resp.content)
    found = [a.get("location") for a in root.iter(f"{{{SOAP11}}}address", f"{{{SOAP12}}}address")]
    assert found
    return found


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("public")
    env = {"OLV_DATABASE_URL": _sqlite(folder), "OLV_PUBLIC_URL": PUBLIC + "/"}
    with soap_server(env, folder) as running:
        yield running


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("direct")
    env = {"OLV_DATABASE_URL": _sqlite(folder), "OLV_TRUSTED_PROXIES": "192.0.2.0/24"}
    with soap_server(env, folder) as running:
        yield running


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("proxied")
    env = {"OLV_DATABASE_URL": _sqlite(folder), "OLV_TRUSTED_PROXIES": "127.0.0.0/8"}
    with soap_server(env, folder) as running:
        yield running


@pytest.mark.parametrize(("path", "query"), WSDLS)
def test_public_url_is_every_address(public, path: str, query: str) -> None:
    expected = PUBLIC + path
    assert set(_locations(public.url(path + query))) == {expected}
    spoofed = {"Host": "evil.example", "X-Forwarded-Proto": "http"}
    assert set(_locations(public.url(path + query), spoofed)) == {expected}


@pytest.mark.parametrize(("path", "query"), WSDLS)
def test_without_public_url_the_request_host_is_used(direct, path: str, query: str) -> None:
    assert set(_locations(direct.url(path + query))) == {direct.base + path}
    named = {"Host": "olv.example:8443"}
    assert set(_locations(direct.url(path + query), named)) == {f"http://olv.example:8443{path}"}


def test_only_a_trusted_proxy_states_the_scheme(direct, proxied) -> None:
    url = "/iicmva/00200510?wsdl"
    https = {"Host": "olv.example", "X-Forwarded-Proto": "https"}
    assert _locations(proxied.url(url), https) == ["https://olv.example/iicmva/00200510"]
    assert _locations(direct.url(url), https) == ["http://olv.example/iicmva/00200510"]
    odd = {"Host": "olv.example", "X-Forwarded-Proto": "javascript"}
    assert _locations(proxied.url(url), odd) == ["http://olv.example/iicmva/00200510"]
    underscore = {"Host": "olv.example", "X_Forwarded_Proto": "https"}
    assert _locations(proxied.url(url), underscore) == ["http://olv.example/iicmva/00200510"]


@pytest.mark.parametrize(
    "host", ['evil.example"/><x y="', "evil.example/path", "a b", "user@evil.example", ""]
)
def test_a_host_that_is_no_host_name_gets_the_listening_address(direct, host: str) -> None:
    port = direct.base.rsplit(":", 1)[1]
    expected = f"http://127.0.0.1:{port}/iicmva/00200809"
    assert _locations(direct.url("/iicmva/00200809?wsdl"), {"Host": host}) == [expected] * 2


def _worker_rss_kb(supervisor_pid: int) -> int:
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    assert len(children) == 1, children
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def test_spoofed_hosts_do_not_grow_the_server(direct) -> None:
    if not Path(f"/proc/{direct.process.pid}/task").is_dir():
        pytest.skip("needs Linux /proc to read the worker's memory")
    url = direct.url("/iicmva/00200809?wsdl")
    pad = "x" * 200

    def fetch(client: httpx.Client, i: int) -> None:
        host = f"h{i}-{pad}.example"
        resp = client.get(url, headers={"Host": host})
        assert resp.status_code == 200 and host.encode() in resp.content

    with httpx.Client(verify=loopback.TLS, timeout=10) as client:
        for i in range(200):  # warm up: allocator pools, the first cache fill
            fetch(client, i)
        before = _worker_rss_kb(direct.process.pid)
        # Each 00200809 WSDL is about 30 kB: an unbounded cache would keep some 60 MB here.
        for i in range(200, 2200):
            fetch(client, i)
        after = _worker_rss_kb(direct.process.pid)
    assert after - before < 16 * 1024, (before, after)


def test_render_cache_is_bounded() -> None:
    for i in range(1000):
        xsd.render_wsdl(xsd.VERSIONS[i % len(xsd.VERSIONS)], f"https://h{i}.example/iicmva")
    info = xsd.render_wsdl.cache_info()
    assert info.maxsize is not None and info.currsize <= info.maxsize <= 64


def test_render_escapes_the_location() -> None:
    location = 'https://olv.example/x?a=1&b="2"<'
    root = etree.fromstring(xsd.render_wsdl("00200809", location))
    found = {a.get("location") for a in root.iter(f"{{{SOAP11}}}address", f"{{{SOAP12}}}address")}
    assert found == {location}
    with pytest.raises(ValueError, match="control"):
        xsd.render_wsdl("00200809", "https://olv.example/\n")


@pytest.mark.parametrize(
    "value",
    [
        "olv.insurer.example",
        "ftp://olv.insurer.example",
        "https://olv.insurer.example/?x=1",
        "https://olv.insurer.example/#top",
        "https://user:secret@olv.insurer.example",
        "https://",
        "https://olv.insurer.example:99999",
    ],
)
def test_bad_public_url_stops_the_start(tmp_path: Path, value: str) -> None:
    env = {**os.environ, "OLV_DATABASE_URL": _sqlite(tmp_path), "OLV_PUBLIC_URL": value}
    run = subprocess.run(
        [sys.executable, "-m", "olv", "soap", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("error: OLV_PUBLIC_URL") and "Traceback" not in run.stderr
