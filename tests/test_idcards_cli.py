"""ID cards end to end through the real ``olv`` executable (SPEC §7) on SQLite and PostgreSQL:
keygen, the state's registry, issuing from a CSV and from the policy store, printing, reading
the printout back (poppler + zxing-cpp), tampering, revocation and hostile files."""

from __future__ import annotations

import json
import stat
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
import zxingcpp
from sqlalchemy import select

from idcards import armour
from idcards.models import IssuedCard
from olv import db
from tests.helpers import prewarmed
from tests.helpers.idcards import PIN, render_page
from tests.helpers.olv_cli import run_here

TODAY = date.today()
VIN_A, VIN_B = "1HGCM82633A004352", "1FTFW1ET5DFC10312"


def olv(*args: str, stdin: str | None = None, cwd: Path | None = None):
    return prewarmed.run(args, stdin=stdin, cwd=cwd, timeout=180)


@pytest.fixture
def in_process():
    """The same commands through ``olv.cli.run`` in this process (for the many quick refusals)."""

    def call(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_here({}, *args, stdin=stdin)

    return call


def cards_csv(path: Path, *rows: str) -> Path:
    header = "insurer_name,naic,policy_number,effective_date,expiration_date,names,year,make,vin,replacement"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def good_rows() -> list[str]:
    start, end = TODAY - timedelta(days=10), TODAY + timedelta(days=355)
    return [
        f"Empire Mutual,12345,NYA-1,{start},{end},JANE PUBLIC;JOHN PUBLIC,2021,Toyota,{VIN_A},",
        f"Empire Mutual,12345,NYA-2,{start},{end},ACME DELIVERY INC,2019,Ford,{VIN_B},yes",
    ]


def registered_issuer(tmp_path: Path, olv=olv) -> tuple[Path, str]:  # noqa: ANN001
    run = olv("cards", "keygen", "--issuer", "PC-123456", "-o", str(tmp_path / "agent.key"),
              stdin=PIN + "\n")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE((tmp_path / "agent.key").stat().st_mode) == 0o600
    lines = run.stdout.splitlines()
    assert lines[0] == f"public key: {tmp_path / 'agent.key.pub'}"
    kid = lines[1].removeprefix("key id: ")
    assert len(kid) == 16
    run = olv(
        "issuers", "add", "--license", "pc-123456", "--name", "Agent Smith", "--naic", "12345"
    )
    assert run.returncode == 0 and "added" in run.stdout, run.stderr
    run = olv("issuers", "key", "add", "PC-123456", str(tmp_path / "agent.key.pub"))
    assert run.returncode == 0 and kid in run.stdout, run.stderr
    return tmp_path / "agent.key", kid


def issued(url: str) -> list[IssuedCard]:
    engine = db.make_engine(url)
    with db.session_factory(engine)() as session:
        rows = list(session.scalars(select(IssuedCard)))
    engine.dispose()
    return rows


def barcode_text(png: Path) -> str:
    from PIL import Image

    with Image.open(png) as image:
        (found, *_) = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.PDF417)
    return found.text


def test_issue_print_scan_verify_tamper_revoke(db_url: str, tmp_path: Path, in_process) -> None:  # noqa: ANN001
    """Issued and first read back by the commands as processes; the other checks of the same
    cards run the same commands in this process (a process each cost a second of CPU)."""
    key, kid = registered_issuer(tmp_path)
    out = tmp_path / "cards.pdf"
    run = olv("cards", "issue", "--key", str(key), "--csv", str(cards_csv(tmp_path / "c.csv", *good_rows())),
              "-o", str(out), stdin=PIN + "\n")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"2 cards issued to {out} (1 pages)"
    log = issued(db_url)
    assert len(log) == 2 and {r.issuer for r in log} == {"PC-123456"} and log[0].key_id == kid

    # The printout, scanned at 300 dpi, then checked as an image, as the PDF and as text.
    page = tmp_path / "scan.png"
    render_page(out, dpi=300).save(page)
    run = olv("cards", "verify", str(page))
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["valid"] is True and answer["issuer"] == "PC-123456" and answer["key_id"] == kid
    assert answer["card"]["vin"] in (VIN_A, VIN_B) and answer["card"]["card_id"] in {
        r.card_id for r in log
    }
    here = in_process
    assert here("cards", "verify", str(out)).returncode == 0
    text = barcode_text(page)
    run = here("cards", "verify", "-", stdin=text + "\n")
    assert run.returncode == 0 and json.loads(run.stdout)["valid"] is True

    # Tampered: one byte of the signed message changed, re-armoured.
    raw = bytearray(armour.decode(text))
    raw[len(raw) // 2] ^= 0x20
    run = here("cards", "verify", "-", stdin=armour.encode(bytes(raw)))
    assert run.returncode == 1 and json.loads(run.stdout)["valid"] is False

    # Cannot read: a text file named .png, and garbage text.
    (tmp_path / "fake.png").write_text("not an image")
    run = here("cards", "verify", str(tmp_path / "fake.png"))
    assert run.returncode == 2 and run.stderr.startswith("error: ") and run.stdout == ""
    assert here("cards", "verify", "-", stdin="hello").returncode == 2
    assert here("cards", "verify", str(tmp_path / "missing.png")).returncode == 2

    # Compromised: today's cards are refused from now on.
    run = here("issuers", "key", "revoke", kid, "--reason", "compromised")
    assert run.returncode == 0, run.stderr
    run = here("cards", "verify", str(page))
    answer = json.loads(run.stdout)
    assert run.returncode == 1 and answer["revoked"] is True and answer["valid"] is False
    listed = [json.loads(line) for line in here("issuers", "list").stdout.splitlines()]
    assert listed[0]["keys"][0]["revoke_reason"] == "compromised"


def test_fs75_two_copies_sixty_days(db_url: str, tmp_path: Path) -> None:
    key, _ = registered_issuer(tmp_path)
    out = tmp_path / "fs75.pdf"
    row = good_rows()[0].replace(f",{TODAY + timedelta(days=355)},", ",,")  # expiry is the rule's
    run = olv("cards", "issue", "--key", str(key), "--csv", str(cards_csv(tmp_path / "c.csv", row)),
              "--fs75", "-o", str(out), stdin=PIN + "\n")  # fmt: skip
    assert run.returncode == 0, run.stderr
    page = render_page(out, dpi=300)
    from PIL import Image

    assert isinstance(page, Image.Image)
    found = zxingcpp.read_barcodes(page, formats=zxingcpp.BarcodeFormat.PDF417)
    assert len(found) == 2 and found[0].text == found[1].text  # two identical copies
    run = olv("cards", "verify", str(out))
    card = json.loads(run.stdout)["card"]
    assert run.returncode == 0 and card["fs75"] is True
    assert card["expires"] == (TODAY + timedelta(days=60)).isoformat()
    assert card["registration_until"] == (TODAY + timedelta(days=45)).isoformat()


def test_refusals_leave_nothing_behind(db_url: str, tmp_path: Path, in_process) -> None:  # noqa: ANN001
    olv = in_process
    key, _ = registered_issuer(tmp_path, olv)
    out = tmp_path / "cards.pdf"
    bad = cards_csv(
        tmp_path / "bad.csv",
        good_rows()[0],
        "Empire Mutual,1234,NYA-3,2026-01-01,2027-01-01,X,2020,Ford,VIN3,",
    )
    run = olv(
        "cards", "issue", "--key", str(key), "--csv", str(bad), "-o", str(out), stdin=PIN + "\n"
    )
    assert (
        run.returncode == 2 and "line 3: naic" in run.stderr and "nothing was issued" in run.stderr
    )
    assert "VIN3" not in run.stderr and not out.exists() and issued(db_url) == []
    good = cards_csv(tmp_path / "c.csv", *good_rows())
    run = olv(
        "cards", "issue", "--key", str(key), "--csv", str(good), "-o", str(out), stdin="wrong-pin\n"
    )
    assert run.returncode == 1 and "wrong PIN" in run.stderr and not out.exists()
    assert list(tmp_path.glob(".cards-*")) == []
    run = olv(
        "cards",
        "keygen",
        "--issuer",
        "PC-123456",
        "-o",
        str(tmp_path / "agent.key"),
        stdin=PIN + "\n",
    )
    assert run.returncode == 2 and "already exists" in run.stderr
    assert olv("issuers", "add", "--license", "PC-1", "--icc", "123", "--name", "X").returncode == 2
    assert olv("issuers", "add", "--icc", "12", "--name", "X").returncode == 2
    assert (
        olv("issuers", "key", "add", "BR-999999", str(tmp_path / "agent.key.pub")).returncode == 2
    )
    assert (
        olv("issuers", "key", "revoke", "0000000000000000", "--reason", "retired").returncode == 2
    )
    assert olv("issuers", "key", "revoke", "0000000000000000", "--reason", "lost").returncode == 2


def test_issue_from_the_policy_store(db_url: str, tmp_path: Path, in_process) -> None:  # noqa: ANN001
    olv = in_process  # the commands as processes: test_issue_print_scan_verify_tamper_revoke
    key, _ = registered_issuer(tmp_path, olv)
    start = (TODAY - timedelta(days=20)).strftime("%Y%m%d")
    end = (TODAY + timedelta(days=100)).strftime("%Y%m%d")
    store = tmp_path / "policies.csv"
    store.write_text(
        "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review\n"
        f"12345,STORE-77,VS,{VIN_A},{start},{end},,\n"
    )
    assert olv("policies", "import", str(store)).returncode == 0
    vehicles = tmp_path / "vehicles.csv"
    vehicles.write_text(f"vin,names,year,make\n{VIN_A},JANE PUBLIC,2021,Toyota\n")
    out = tmp_path / "store.pdf"
    run = olv("cards", "issue", "--key", str(key), "--naic", "12345", "--vehicles", str(vehicles),
              "--insurer-name", "Empire Mutual", "-o", str(out), stdin=PIN + "\n")  # fmt: skip
    assert run.returncode == 0, run.stderr
    card = json.loads(olv("cards", "verify", str(out)).stdout)["card"]
    assert (card["policy_number"], card["vin"], card["expires"]) == (
        "STORE-77",
        VIN_A,
        (TODAY + timedelta(days=100)).isoformat(),
    )
    vehicles.write_text(f"vin,names,year,make\n{VIN_B},JOHN PUBLIC,2019,Ford\n")
    run = olv("cards", "issue", "--key", str(key), "--naic", "12345", "--vehicles", str(vehicles),
              "--insurer-name", "Empire Mutual", "-o", str(tmp_path / "none.pdf"), stdin=PIN + "\n")  # fmt: skip
    assert run.returncode == 2 and "no coverage in force" in run.stderr
