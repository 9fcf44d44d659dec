"""``olv demo`` works from an empty folder on the embedded SQLite default, as the README says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.helpers.soap import codes_of, free_port, response_element


def test_demo_serves_and_confirms(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLV_")}
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "olv", "demo", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/iicmva/00200809"
    try:
        deadline = time.monotonic() + 40
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        banner = log.read_text()
        assert url in banner and "curl" in banner and "zeep" in banner
        assert (tmp_path / "olv.db").exists()
        request = (tmp_path / "olv-demo-request.xml").read_bytes()
        resp = httpx.post(url, content=request, headers={"Content-Type": "text/xml"})
        assert codes_of(response_element(resp)) == ("Confirmed", [])
        # the zeep example the banner prints, run as a user would paste it
        snippet = banner.split("python -c ", 1)[1].split("\n\nPress", 1)[0].strip().strip('"')
        out = subprocess.run(
            [sys.executable, "-c", snippet], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert "Confirmed" in out.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
