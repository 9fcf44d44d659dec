"""Enforcement transactions by SFTP drop (SPEC §6): ``IIES <NAIC> <YYYYMMDD>….csv`` in an
insurer's inbox is loaded as transactions, acknowledged and answered in the outbox, while a
book-of-business file in the same round still loads as one; a hostile or misnamed file is
refused whole and the others are served."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bob_loader.intake import Intake
from bob_loader.intake_claims import STAMP_FORMAT, StabilityTracker
from bob_loader.load import load_files
from bob_loader.models import BobFile
from enforcement.intake import IiesIntake
from enforcement.models import IiesTransaction
from olv import db
from tests.helpers.bob_intake_data import write_bob
from tests.helpers.iies import NAIC, OTHER_NAIC, csv_text, row

OLD = time.time() - 3600


def _drop(inbox: Path, name: str, content: bytes) -> None:
    path = inbox / name
    path.write_bytes(content)
    os.utime(path, (OLD, OLD))


def _account(base: Path, name: str) -> Path:
    inbox = base / name / "inbox"
    inbox.mkdir(parents=True)
    return inbox


def _outbox(base: Path, name: str) -> list[str]:
    return sorted(p.name for p in (base / name / "outbox").iterdir())


def _intake(
    engine: Engine, base: Path, account_naics: dict[str, list[str]] | None = None
) -> Intake:
    """The watcher's round, BoB files and IIES files alike, with no wait for stable uploads."""
    return Intake(
        base=base,
        engine=engine,
        loader=load_files,
        stability=StabilityTracker(0.0),
        contacts=lambda naics: [],
        account_naics=account_naics,
        handlers=[IiesIntake()],
    )


def test_iies_files_share_the_intake_with_books_of_business(db_url: str, tmp_path: Path) -> None:
    engine = db.make_engine(db_url)
    try:
        acme = _account(tmp_path, "acme")
        other = _account(tmp_path, "other")
        good = csv_text([row(txn_id="A1"), row(txn_id="A2", vin="UNKNOWN")]).encode()
        _drop(acme, f"IIES {NAIC} 20261203.csv", good)
        _drop(acme, "IIES 12345.csv", good)  # misnamed
        _drop(other, f"IIES {OTHER_NAIC} 20261203 01.csv", b"\x00\x01 binary" * 50)
        write_bob(acme / "Acme 20261201.txt", NAIC, 3)
        os.utime(acme / "Acme 20261201.txt", (OLD, OLD))
        intake = _intake(engine, tmp_path, {"acme": [NAIC], "other": [OTHER_NAIC]})
        assert intake.run_round() == 4

        acks = {}
        for account in ("acme", "other"):
            for name in _outbox(tmp_path, account):
                if name.endswith(".ack.json"):
                    body = json.loads((tmp_path / account / "outbox" / name).read_text())
                    acks[body["file"]] = body
        assert acks[f"IIES {NAIC} 20261203.csv"]["status"] == "accepted"
        assert acks[f"IIES {NAIC} 20261203.csv"]["counts"] == {"H": 0, "R": 0, "E": 1, "U": 1}
        assert acks["IIES 12345.csv"]["error_code"] == "F10"
        assert acks[f"IIES {OTHER_NAIC} 20261203 01.csv"]["error_code"] == "F01"
        [returns] = [n for n in _outbox(tmp_path, "acme") if n.startswith("IIES-RETURNS")]
        lines = (tmp_path / "acme" / "outbox" / returns).read_text().splitlines()
        assert lines[1].startswith("A1,U,") and lines[2].startswith("A2,E,E43")
        with db.transaction(engine) as session:
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 2
            bob = session.scalars(select(BobFile)).all()
            assert [(f.name, f.status) for f in bob] == [("Acme 20261201.txt", "accepted")]
    finally:
        engine.dispose()


def test_only_a_name_that_starts_with_the_word_iies_is_a_transaction_file(
    db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    try:
        acme = _account(tmp_path, "acme")
        # A book of business whose name merely begins with the letters: the BoB loader's.
        write_bob(acme / "IIESCO 20261201.txt", NAIC, 3)
        os.utime(acme / "IIESCO 20261201.txt", (OLD, OLD))
        # A transaction file with the wrong separators: still the IIES handler's, refused F10.
        _drop(acme, f"iies_{NAIC}_20261203.csv", csv_text([row(txn_id="A1")]).encode())
        intake = _intake(engine, tmp_path, {"acme": [NAIC]})
        assert intake.run_round() == 2
        acks = [
            json.loads((tmp_path / "acme" / "outbox" / n).read_text())
            for n in _outbox(tmp_path, "acme")
            if n.endswith(".ack.json")
        ]
        assert [(a["file"], a["error_code"]) for a in acks] == [
            (f"iies_{NAIC}_20261203.csv", "F10")
        ]
        with db.transaction(engine) as session:
            bob = session.scalars(select(BobFile)).all()
            assert [(f.name, f.status) for f in bob] == [("IIESCO 20261201.txt", "accepted")]
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 0
    finally:
        engine.dispose()


def test_a_naic_not_bound_to_the_account_is_refused(db_url: str, tmp_path: Path) -> None:
    engine = db.make_engine(db_url)
    try:
        acme = _account(tmp_path, "acme")
        _drop(acme, f"IIES {OTHER_NAIC} 20261203.csv", csv_text([row(naic=OTHER_NAIC)]).encode())
        intake = _intake(engine, tmp_path, {"acme": [NAIC]})
        assert intake.run_round() == 1
        [ack] = [n for n in _outbox(tmp_path, "acme") if n.endswith(".ack.json")]
        body = json.loads((tmp_path / "acme" / "outbox" / ack).read_text())
        assert (body["status"], body["error_code"]) == ("rejected", "F09")
        with db.transaction(engine) as session:
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 0
    finally:
        engine.dispose()


def test_an_acknowledgement_lost_to_a_full_disk_comes_back_on_the_next_round(
    db_url: str, tmp_path: Path
) -> None:
    """The load commits before its acknowledgement is written: a full outbox then fails the
    round with the load done. The claim stays, and the next round hands out that load's own
    acknowledgement and returns, without loading the file twice."""
    engine = db.make_engine(db_url)
    try:
        acme = _account(tmp_path, "acme")
        name = f"IIES {NAIC} 20261203.csv"
        _drop(acme, name, csv_text([row(txn_id="A1"), row(txn_id="A2", vin="UNKNOWN")]).encode())
        outbox = tmp_path / "acme" / "outbox"
        outbox.mkdir()
        # The acknowledgement's temporary name, for any claim stamp of the next minute, leads
        # to /dev/full: each write there fails with ENOSPC.
        start = int(time.time())
        full = [outbox / f".{_stamp(start + s)}_{name}.ack.json.part" for s in range(60)]
        for link in full:
            link.symlink_to("/dev/full")
        intake = _intake(engine, tmp_path, {"acme": [NAIC]})
        assert intake.run_round() == 0
        assert intake.failures == 1
        assert [n for n in _outbox(tmp_path, "acme") if not n.endswith(".part")] == []
        assert _transactions(engine) == 2  # loaded and committed

        for link in full:
            link.unlink()  # the disk has room again
        assert intake.run_round() == 1
        [ack] = [n for n in _outbox(tmp_path, "acme") if n.endswith(".ack.json")]
        body = json.loads((outbox / ack).read_text())
        assert (body["file"], body["status"]) == (name, "accepted")
        assert body["counts"] == {"H": 0, "R": 0, "E": 1, "U": 1}
        assert any(n.startswith("IIES-RETURNS") for n in _outbox(tmp_path, "acme"))
        assert _transactions(engine) == 2  # not loaded a second time
    finally:
        engine.dispose()


def _stamp(at: int) -> str:
    return time.strftime(STAMP_FORMAT, time.gmtime(at))


def _transactions(engine: Engine) -> int:
    with db.transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(IiesTransaction)) or 0


def test_a_link_claimed_in_place_of_an_upload_is_refused_unread(
    db_url: str, tmp_path: Path
) -> None:
    """The claim renamed a link the insurer swapped in after the listing: the acknowledgement
    refuses it (F01) without following it, so nothing of the target is loaded, hashed or
    acknowledged, and a link to /dev/zero does not hang the worker."""
    import threading

    from bob_loader.intake_claims import claim, discover_accounts
    from enforcement.models import IiesFile

    secret = tmp_path / "secret.csv"
    secret.write_text(csv_text([row(txn_id="SECRET1", last_name="HIDDENNAME")]))
    engine = db.make_engine(db_url)
    try:
        acme = _account(tmp_path / "intake", "acme")
        [account] = discover_accounts(tmp_path / "intake")
        os.symlink(secret, acme / f"IIES {NAIC} 20261203.csv")
        os.symlink("/dev/zero", acme / "IIES 12345.csv")  # misnamed: refused before loading
        for name in (f"IIES {NAIC} 20261203.csv", "IIES 12345.csv"):
            assert claim(account, acme / name) is not None
        intake = _intake(engine, tmp_path / "intake")
        done: list[int] = []
        worker = threading.Thread(target=lambda: done.append(intake.run_round()), daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the worker hangs on a link to /dev/zero"
        assert done == [2]

        outbox = tmp_path / "intake" / "acme" / "outbox"
        acks = [json.loads(p.read_text()) for p in outbox.glob("*.ack.json")]
        assert sorted((a["file"], a["status"]) for a in acks) == [
            (f"IIES {NAIC} 20261203.csv", "rejected"),
            ("IIES 12345.csv", "rejected"),
        ]
        linked = next(a for a in acks if a["file"] == f"IIES {NAIC} 20261203.csv")
        assert linked["error_code"] == "F01" and "not a regular file" in linked["error"]
        assert not any("HIDDENNAME" in p.read_text() for p in outbox.iterdir())
        with db.transaction(engine) as session:
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 0
            assert list(session.scalars(select(IiesFile.sha256))) == [None, None]
        archive = tmp_path / "intake" / "acme" / "archive"
        archived = [p for p in archive.iterdir() if p != account.processing]
        assert len(archived) == 2  # empty stand-ins: an archived link would lead to its target
        assert all(not p.is_symlink() and p.stat().st_size == 0 for p in archived)
    finally:
        engine.dispose()


def _unprivileged() -> list[str]:
    """A command prefix that takes away root's right to read any file, so that a file of mode
    000 is as unreadable to the intake as it is to a watcher running as an ordinary user."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to make a file unreadable")
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search"]


def test_an_unreadable_upload_is_refused_and_the_account_goes_on(
    db_url: str, tmp_path: Path
) -> None:
    """An IIES file the watcher may not read (an SFTP client left it 0600, owned by another
    user) is refused with an acknowledgement, like a BoB file in that state, instead of being
    retried at every poll with the account's later files held behind it."""
    base = tmp_path / "intake"
    acme, beta = _account(base, "acme"), _account(base, "beta")
    good = csv_text([row(txn_id="A1", last_name="HIDDENNAME")]).encode()
    _drop(acme, f"IIES {NAIC} 20261203.csv", good)
    _drop(beta, "IIES 12345.csv", good)  # misnamed: refused before loading, also unreadable
    for name in (acme / f"IIES {NAIC} 20261203.csv", beta / "IIES 12345.csv"):
        name.chmod(0)
        os.utime(name, (OLD - 60, OLD - 60))  # older than the BoB: first in the account's line
    write_bob(acme / "Acme 20261201.txt", NAIC, 3)
    os.utime(acme / "Acme 20261201.txt", (OLD, OLD))
    olv = str(Path(sys.executable).with_name("olv"))
    env = {**os.environ, "OLV_DATABASE_URL": db_url, "OLV_INTAKE_STABLE_SECONDS": "0"}

    run = subprocess.run(
        [*_unprivileged(), olv, "bob", "watch", str(base), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 0, run.stderr  # nothing left to retry
    acks = {}
    for account in ("acme", "beta"):
        for name in _outbox(base, account):
            if name.endswith(".ack.json"):
                body = json.loads((base / account / "outbox" / name).read_text())
                acks[body["file"]] = body
    unreadable = acks[f"IIES {NAIC} 20261203.csv"]
    assert (unreadable["status"], unreadable["error_code"]) == ("rejected", "F01")
    assert unreadable["error"] == "cannot read the file: Permission denied"
    assert unreadable["naic"] == NAIC
    assert (acks["IIES 12345.csv"]["status"], acks["IIES 12345.csv"]["error_code"]) == (
        "rejected",
        "F10",
    )
    assert "retrying next round" not in run.stderr
    for account, files in (("acme", 2), ("beta", 1)):
        archive = base / account / "archive"
        assert len([p for p in archive.iterdir() if not p.name.startswith(".")]) == files
        assert [p.name for p in (archive / ".processing").iterdir()] == []
    engine = db.make_engine(db_url)
    try:
        with db.transaction(engine) as session:
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 0
            bob = session.scalars(select(BobFile)).all()
            assert [(f.name, f.status) for f in bob] == [("Acme 20261201.txt", "accepted")]
    finally:
        engine.dispose()
