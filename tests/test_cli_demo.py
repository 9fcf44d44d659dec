"""``olv demo`` works from an empty folder on the embedded SQLite default, as the README says:
the SOAP service answers, and the portal beside it signs in the printed demo people with the
printed second factor and verifies the printed plates through that SOAP service."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyotp

from tests.helpers import loopback
from tests.helpers.free_ports import free_port
from tests.helpers.soap import codes_of, response_element


def test_demo_serves_and_confirms(tmp_path: Path) -> None:
    port, portal_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLV_")}
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "olv",
                "demo",
                "--port",
                str(port),
                "--portal-port",
                str(portal_port),
            ],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/iicmva/00200809"
    portal = f"http://127.0.0.1:{portal_port}"
    try:
        deadline = time.monotonic() + 120
        for health in (f"http://127.0.0.1:{port}/healthz", f"{portal}/healthz"):
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if loopback.get(health, timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        banner = log.read_text()
        assert url in banner and "curl" in banner and "zeep" in banner
        assert (tmp_path / "olv.db").exists()
        request = (tmp_path / "olv-demo-request.xml").read_bytes()
        resp = loopback.post(url, content=request, headers={"Content-Type": "text/xml"})
        assert codes_of(response_element(resp)) == ("Confirmed", [])
        # the zeep example the banner prints, run as a user would paste it
        snippet = (
            banner.split("python -c ", 1)[1].split("\n\nState portal", 1)[0].strip().strip('"')
        )
        out = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert "Confirmed" in out.stdout
        _portal_as_the_banner_says(portal, banner, tmp_path)
        _enforcement_as_the_banner_says(tmp_path, log, env)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def _portal_as_the_banner_says(portal: str, banner: str, folder: Path) -> None:
    assert f"State portal: {portal}/" in banner
    password = banner.split("password: ", 1)[1].split()[0]
    command = banner.split("print the current code with:", 1)[1].splitlines()[1]
    python, code_line = command.strip().split(" -c ", 1)
    assert Path(python).exists()
    code_line = code_line.strip().strip('"')
    code = subprocess.run(
        [sys.executable, "-c", code_line], capture_output=True, text=True, timeout=30
    )
    assert code.returncode == 0 and code.stdout.strip().isdigit(), code.stderr
    secret = banner.split("demo secret ", 1)[1].split()[0]
    assert pyotp.TOTP(secret).verify(code.stdout.strip(), valid_window=1)
    browser = {"Sec-Fetch-Site": "same-origin", "Accept": "text/html"}
    with httpx.Client(verify=loopback.TLS, base_url=portal, headers=browser) as client:
        signed = client.post("/login", data={"username": "officer", "password": password})
        assert signed.headers["location"] == "/login/totp", signed.text
        done = client.post("/login/totp", data={"code": code.stdout.strip()})
        assert done.headers["location"] == "/query", done.text
        answer = client.post("/query", data={"plate": "DEMO1"})
        assert answer.status_code == 200 and 'class="verdict confirmed"' in answer.text
        broadcast = client.post("/query.json", data={"plate": "DEMO4"}).json()
        assert broadcast["verdict"] == "unconfirmed" and broadcast["source"] == "broadcast"
        # The printed sample ID card, checked on the card page as the banner says.
        card = folder / "olv-demo-card.pdf"
        assert f"{portal}/cards/check" in banner and str(card) in banner
        files = {"photo": ("card.pdf", card.read_bytes(), "application/pdf")}
        checked = client.post("/cards/check.json", files=files).json()["answer"]
        assert checked["valid"] is True and checked["live"]["verdict"] == "confirmed", checked


def _enforcement_as_the_banner_says(folder: Path, log: Path, env: dict[str, str]) -> None:
    """The cancellation became a letter on paper, and DEMO1's paper proof was verified live."""
    import csv
    import json

    deadline = time.monotonic() + 60
    while "demo paper proof for DEMO1" not in log.read_text():
        assert "demo enforcement failed" not in log.read_text(), log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    banner = log.read_text()
    assert "Enforcement (SPEC §6)" in banner
    with (folder / "olv-demo-letters" / "mailing.csv").open(encoding="utf-8") as handle:
        (letter,) = list(csv.DictReader(handle))
    assert letter["kind"] == "first_inquiry" and letter["name"] == "MARIA GARCIA"
    assert (folder / "olv-demo-letters" / letter["file"]).read_bytes().startswith(b"%PDF-")
    command = banner.split("olv iies case ", 1)[1].split()[0]
    case = subprocess.run(
        [sys.executable, "-m", "olv", "iies", "case", command],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert case.returncode == 0, case.stderr
    record = json.loads(case.stdout)
    assert record["case_state"] == "FIQ" and record["activities"][-1]["doc_id"] == letter["doc_id"]
    line = log.read_text().split("demo paper proof for DEMO1: ", 1)[1].splitlines()[0]
    assert json.loads(line)["live"] == "Confirmed"
