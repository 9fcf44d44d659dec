"""The "Check a card" page in Debian's Chromium (Playwright) at phone width, with JavaScript
off: an officer signs in, uploads a phone photo of a printed card, and reads GENUINE CARD and
the live verdict; then a photo of a forged card reads CARD NOT VALID."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pyotp
import pytest

from idcards import armour, barcode, cose
from olv import db
from portal import card_issuers, users
from service.demo import CONFIRMED_POLICY, CONFIRMED_VIN, DEMO_NAIC
from tests.helpers.idcards import card_pdf, make_key, photo, render_page, sample_card, top_card
from tests.helpers.portal import demo_world, portal_server
from tests.test_portal_browser import CHROMIUM, CHROMIUM_ARGS, PHONE, _browser_or_skip, _shot

PASSWORD = "a card checking passphrase 9"


@pytest.fixture
def world(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The demo world plus an issuer with a key; yields the portal's URL and two photos."""
    _browser_or_skip()
    path = tmp_path / "olv.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    with demo_world(url, tmp_path) as engine:
        key = make_key(tmp_path)
        with db.transaction(engine) as session:
            users.add(session, "patrol-7", "officer", PASSWORD)
            card_issuers.add_issuer(session, "PC-123456", "license", "Agent", None, actor="t")
            card_issuers.add_key(session, "PC-123456", key.private.public_key(), actor="t")
        card = sample_card(naic=DEMO_NAIC, policy_number=CONFIRMED_POLICY, vin=CONFIRMED_VIN)
        genuine = tmp_path / "genuine.jpg"
        page = render_page(card_pdf(tmp_path, card, key), dpi=300)
        genuine.write_bytes(photo(top_card(page), angle=-6, width=1800))
        # A forgery: the expiry moved a year on, re-encoded, the old signature kept.
        from idcards import signed

        message = cose.parse(armour.decode(signed.sign_card(card, key)))
        fields = cbor2.loads(message.payload)
        fields[8] += 365
        payload = cbor2.dumps(fields, canonical=True)
        raw = cbor2.dumps(cbor2.CBORTag(18, [message.protected, {}, payload, message.signature]))
        forged = tmp_path / "forged.png"
        barcode.render(armour.encode(raw), pixels_per_module=4).save(forged)
        with portal_server({"OLV_DATABASE_URL": url}, tmp_path) as portal:
            yield portal.base, genuine, forged


def test_check_a_card_from_a_phone_photo(world: tuple[str, Path, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, genuine, forged = world
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
            java_script_enabled=False,  # the page needs none
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{base}/cards/check")
            page.fill("#username", "patrol-7")
            page.fill("#password", PASSWORD)
            page.click("main button[type=submit]")
            secret = page.inner_text("#totp-secret").strip()
            page.fill("#code", pyotp.TOTP(secret).now())
            page.click("main button[type=submit]")
            page.goto(f"{base}/cards/check")
            expect(page.locator("nav")).to_contain_text("Check a card")

            page.set_input_files("#photo", str(genuine))
            page.click("main button[type=submit]")
            expect(page.locator("#card-verdict")).to_contain_text("GENUINE CARD")
            expect(page.locator("#live-verdict")).to_contain_text("CONFIRMED")
            expect(page.locator("#card-facts")).to_contain_text(CONFIRMED_VIN)
            # Phone width: the answer and the form fit the screen.
            for part in ("#card-verdict", "#card-facts", "form"):
                box = page.locator(part).first.bounding_box()
                assert (
                    box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
                )
            _shot(page, "card-genuine-phone", tmp_path)

            page.set_input_files("#photo", str(forged))
            page.click("main button[type=submit]")
            expect(page.locator("#card-verdict")).to_contain_text("CARD NOT VALID")
            expect(page.locator("#card-verdict")).to_contain_text("bad signature")
            expect(page.locator("#card-facts")).to_have_count(0)
            _shot(page, "card-forged-phone", tmp_path)
        finally:
            browser.close()
