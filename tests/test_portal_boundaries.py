"""The portal's boundaries: it never imports the insurer service, and its logs carry no
insured data even when something fails."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from olv.config import Settings
from olv.logging import JsonFormatter
from portal.app import create_app
from portal.settings import PortalSettings

MODULES = [
    path.relative_to(Path(__file__).resolve().parents[1])
    .with_suffix("")
    .as_posix()
    .replace("/", ".")
    for path in (Path(__file__).resolve().parents[1] / "portal").rglob("*.py")
]


def test_no_portal_module_imports_the_insurer_service() -> None:
    modules = [m.removesuffix(".__init__") for m in MODULES]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'service' or m.startswith('service.'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(modules) > 20


def test_an_internal_error_logs_no_request_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database without the portal's tables: the token check fails inside the app.
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"), PortalSettings())
    secret = "olv_" + "a" * 12 + "_" + "SECRETSECRETSECRETSECRETSECRET1234567890abc"
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(
            "/api/v1/verify",
            json={"vin": "1HGCM82633A004352"},
            headers={"Authorization": f"Bearer {secret}"},
        )
    assert response.status_code == 500
    lines = [JsonFormatter().format(record) for record in caplog.records]
    assert lines and any("OperationalError" in line for line in lines)
    for line in lines:
        assert (
            "1HGCM82633A004352" not in line
            and "SECRETSECRET" not in line
            and "aaaaaaaaaaaa" not in line
        )


def test_portal_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    from olv import db
    from tests.helpers.portal import portal_server

    url = f"sqlite:///{tmp_path / 'state.db'}"
    db.upgrade(url)
    with portal_server({"OLV_DATABASE_URL": url}, tmp_path, prewarm=False) as portal:
        code = portal.stop()
    log = portal.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log
    # The interpreter's teardown is not run after the server's own: in it, zxing-cpp's
    # bindings reported every object of theirs still alive ("nanobind: leaked ...").
    assert "leaked" not in log, log
