"""A person in a browser: Debian's Chromium, driven by Playwright, on a phone-sized screen,
against a real ``olv portal serve`` with a real ``olv soap serve`` insurer behind it.

Signs in (password, then enrolling the second factor from the page and typing the current TOTP
code), queries a plate and sees the verdict, uploads a batch and downloads the answers, and
opens the compliance charts. ``OLV_TEST_SCREENSHOT_DIR`` keeps the screenshots for a look.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from olv import db
from portal import users
from tests.helpers.portal import demo_world, portal_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
PASSWORD = "a browser test passphrase 7"


def _required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("OLV_TEST_REQUIRE_PG") == "1"


def _browser_or_skip() -> None:
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        problem = f"playwright is not installed ({exc})"
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (scripts/test installs Debian's chromium package)"
    if problem is None:
        return
    if _required():
        pytest.fail(f"browser tests required under CI: {problem}")
    print(f"skipping browser tests: {problem}")
    pytest.skip(problem)


@pytest.fixture
def world(sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """Insurer store + SOAP service + the demo's portal data + a portal process; yields the
    portal's base URL."""
    _browser_or_skip()
    path = tmp_path / "olv.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    with demo_world(url, tmp_path) as engine:
        with db.transaction(engine) as session:  # a new person: enrols at first sign-in
            users.add(session, "state-admin", "admin", PASSWORD)
        env = {"OLV_DATABASE_URL": url, "OLV_PORTAL_UPLOAD_DIR": str(tmp_path / "up")}
        with portal_server(env, tmp_path) as portal:
            yield portal.base


def _shot(page, name: str, folder: Path) -> Path:  # noqa: ANN001 - playwright Page
    keep = os.environ.get("OLV_TEST_SCREENSHOT_DIR")
    target = Path(keep) if keep else folder
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000  # a rendered page, not an empty image
    return path


def test_sign_in_query_batch_and_compliance_in_chromium(world: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            accept_downloads=True,
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{world}/query")
            expect(page).to_have_url(f"{world}/login")  # not signed in yet

            page.fill("#username", "state-admin")
            page.fill("#password", PASSWORD)
            page.click("main button[type=submit]")
            expect(page).to_have_url(f"{world}/login/enrol")
            expect(page.locator(".qr svg")).to_be_visible()
            secret = page.inner_text("#totp-secret").strip()
            _shot(page, "enrol-phone", tmp_path)
            page.fill("#code", pyotp.TOTP(secret).now())
            page.click("main button[type=submit]")
            expect(page).to_have_url(f"{world}/query")

            page.fill("#plate", "DEMO1")
            page.click("main button[type=submit]")
            expect(page.locator("#verdict")).to_contain_text("CONFIRMED")
            expect(page.locator("#evidence")).to_contain_text("DEMO-1001")
            _shot(page, "query-phone", tmp_path)
            # the verdict fits the phone's width: nothing to scroll sideways
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

            page.goto(f"{world}/batch")
            page.set_input_files(
                "#file",
                {
                    "name": "renewals.csv",
                    "mimeType": "text/csv",
                    "buffer": b"plate,state\nDEMO1,ID\nDEMO2,ID\n",
                },
            )
            with page.expect_download() as download_info:
                page.click("main button[type=submit]")
            answers = Path(download_info.value.path()).read_text()
            rows = list(csv.DictReader(io.StringIO(answers)))
            assert [(r["plate"], r["verdict"]) for r in rows] == [
                ("DEMO1", "confirmed"),
                ("DEMO2", "unconfirmed"),
            ]

            page.goto(f"{world}/history")
            expect(page.locator("#history")).to_contain_text("DEMO1")
            page.goto(f"{world}/bob")
            expect(page.locator("#files")).to_contain_text("accepted")
            _shot(page, "bob-phone", tmp_path)

            page.goto(f"{world}/compliance")
            section = page.locator("#insurer-99999")
            expect(section).to_be_visible()
            assert section.locator("svg.chart").count() == 4
            expect(section.locator("svg.chart").first).to_be_visible()
            _shot(page, "compliance-phone", tmp_path)
        finally:
            browser.close()
