"""The intake never stops for one bad file: hostile names, unexpected errors, huge lines, the
conflict rule across accounts, and pickup while another account's large file loads."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from bob_loader import intake_watch
from bob_loader.intake import Intake, Loader
from bob_loader.intake_claims import StabilityTracker, safe_name
from bob_loader.load import LoadOutcome, load_files
from bob_loader.mail import MemorySender, SmtpSender
from bob_loader.models import BobCurrent, BobFile
from olv import db
from olv.logging import JsonFormatter
from tests.helpers.bob_intake_data import vin, write_bob
from tests.helpers.memory import peak_bytes
from tests.helpers.smtp_capture import smtp_server

OLV = str(Path(sys.executable).with_name("olv"))
OLD = time.time() - 3600

# Names an SFTP client can create: line breaks, a header injection attempt, a terminal escape,
# bytes that are not UTF-8, a bidi override, and a name near the file system's 255-byte limit.
HOSTILE_NAMES: list[str | bytes] = [
    "Acme\n20250101.txt",
    "Acme\r\nBcc: victim@example.com\r\n.txt",
    "Acme\x1b[31m\x07.txt",
    b"Acme \xff\xfe 20250101.txt",
    "Acme\u202etxt.exe",
    "A" * 250,
]


def make_inbox(base: Path, account: str) -> Path:
    inbox = base / account / "inbox"
    inbox.mkdir(parents=True)
    return inbox


def drop_bob(inbox: Path, name: str | bytes, naic: str, *, first: int = 0, mtime: float = OLD):
    target = os.path.join(os.fsencode(inbox), os.fsencode(name))
    tmp = inbox / ".upload.part"
    write_bob(tmp, naic, good=5, first=first)
    os.rename(tmp, target)
    os.utime(target, (mtime, mtime))


def real_intake(base: Path, url: str, **kw: object) -> Intake:
    return Intake(
        base=base,
        engine=db.make_engine(url),
        loader=load_files,
        stability=StabilityTracker(0.0),
        contacts=lambda naics: [f"bob-{n}@insurer.example" for n in naics],
        **kw,  # type: ignore[arg-type]
    )


def stub_intake(base: Path, loader: Loader, contacts: list[str], **kw: object) -> Intake:
    """An intake without a database: ``loader`` stands in for the BoB loader."""
    return Intake(
        base=base,
        engine=None,  # type: ignore[arg-type]
        loader=loader,
        stability=StabilityTracker(0.0),
        contacts=lambda naics: contacts,
        **kw,  # type: ignore[arg-type]
    )


def visible(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def test_safe_name_is_printable_and_fits_the_file_system() -> None:
    for raw in HOSTILE_NAMES:
        name = safe_name(os.fsdecode(raw) if isinstance(raw, bytes) else raw)
        assert name.isprintable()
        stamped = f"20250101T000000Z_{name}.errors.txt"
        assert len(stamped.encode()) <= 255
    assert safe_name("Acme 20250101.txt") == "Acme 20250101.txt"
    assert safe_name("a\nb") == "a?b"


def test_hostile_file_names_are_loaded_archived_reported_and_mailed(
    db_url: str, tmp_path: Path
) -> None:
    base = tmp_path / "intake"
    acme, beta = make_inbox(base, "acme"), make_inbox(base, "beta")
    for i, name in enumerate(HOSTILE_NAMES):
        drop_bob(acme, name, f"1111{i}", first=100 * i)
    drop_bob(beta, "Beta 20250101.txt", "22222", first=900)

    with smtp_server() as smtp:
        sender = SmtpSender(smtp.host, smtp.port, tls="none", timeout=10)
        watcher = real_intake(base, db_url, sender=sender)
        try:
            ok = intake_watch.watch(watcher, poll_seconds=0.1, stop=threading.Event(), once=True)
        finally:
            watcher.engine.dispose()
        received = smtp.wait_for(len(HOSTILE_NAMES) + 1)

    assert ok
    assert visible(acme) == [] and visible(beta) == []
    archived = visible(base / "acme" / "archive")
    assert len(archived) == len(HOSTILE_NAMES)
    assert all(name.isprintable() for name in archived)
    assert visible(base / "acme" / "archive" / ".processing") == []
    assert len(received) == len(HOSTILE_NAMES) + 1
    for mail in received:
        subject = mail.message["Subject"]
        assert "\n" not in subject and "\r" not in subject and "\x1b" not in subject
        assert "accepted" in subject
        assert mail.rcpt_tos != ["victim@example.com"] and "Bcc" not in mail.message
    subjects = " ".join(m.message["Subject"] for m in received)
    assert "Acme?20250101.txt" in subjects and "Beta 20250101.txt" in subjects
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        names = list(conn.scalars(select(BobFile.name)))
        current = {r.naic for r in conn.execute(select(BobCurrent))}
    engine.dispose()
    assert len(names) == len(HOSTILE_NAMES) + 1 and all(n.isprintable() for n in names)
    assert current == {f"1111{i}" for i in range(len(HOSTILE_NAMES))} | {"22222"}


@pytest.mark.slow
def test_the_watcher_process_logs_hostile_names_as_json_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'olv.db'}"
    env = {**os.environ, "OLV_DATABASE_URL": url, "OLV_INTAKE_STABLE_SECONDS": "0"}
    subprocess.run([OLV, "db", "upgrade"], env=env, check=True, capture_output=True)
    base = tmp_path / "intake"
    acme = make_inbox(base, "acme")
    drop_bob(acme, 'Acme\n{"level": "critical"}\r\n.txt', "12345")
    drop_bob(acme, b"Acme\xff.txt", "12346", first=50)

    with smtp_server() as smtp:
        env.update(OLV_SMTP_HOST=smtp.host, OLV_SMTP_PORT=str(smtp.port), OLV_SMTP_TLS="none")
        env["OLV_INTAKE_ACCOUNT_EMAILS"] = "acme=edi@acme.example"
        done = subprocess.run(
            [OLV, "bob", "watch", str(base), "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        mails = smtp.wait_for(2)

    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one whole JSON object
    assert not any(e["level"] == "critical" for e in entries)
    assert sum(1 for e in entries if e["message"] == "file accepted") == 2
    assert len(mails) == 2 and len(visible(base / "acme" / "archive")) == 2


class Boom(RuntimeError):
    pass


def test_an_unexpected_error_is_reported_for_its_file_and_the_round_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = vin(4242)
    base = tmp_path / "intake"
    acme, beta = make_inbox(base, "acme"), make_inbox(base, "beta")
    drop_bob(acme, "Acme bad.txt", "12345", mtime=OLD)
    drop_bob(acme, "Acme good.txt", "12346", mtime=OLD + 1)
    drop_bob(beta, "Beta.txt", "22222", mtime=OLD + 2)
    loaded: list[str] = []

    def loader(engine: object, paths: list[Path], **kw: object) -> list[LoadOutcome]:
        if paths[0].name == "Acme bad.txt":
            raise Boom(f"record for VIN {secret} broke something")
        loaded.append(paths[0].name)
        report = kw["report_dir"]
        assert isinstance(report, Path)
        return [LoadOutcome(paths[0], "accepted", ["1"], 5, 0, 0, None, None)]

    sender = MemorySender()
    watcher = stub_intake(base, loader, ["ops@insurer.example"], sender=sender)
    with caplog.at_level(logging.INFO):
        ok = intake_watch.watch(watcher, poll_seconds=0.1, stop=threading.Event(), once=True)

    assert ok is False  # cron notices
    assert loaded == ["Acme good.txt", "Beta.txt"]
    archived = visible(base / "acme" / "archive")
    assert [a[17:] for a in archived] == ["Acme bad.txt", "Acme good.txt"]
    [report] = visible(base / "acme" / "outbox")
    assert report == f"{archived[0]}.errors.txt"
    text = (base / "acme" / "outbox" / report).read_text()
    assert "status: failed" in text and "internal error" in text
    failed = [m for m in sender.messages if "failed" in m["Subject"]]
    assert len(failed) == 1 and "internal error" in failed[0].get_content()
    assert len(sender.messages) == 3
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert secret not in logged and "broke something" not in logged
    [record] = [r for r in caplog.records if r.getMessage().startswith("file failed:")]
    assert record.__dict__["error"] == "Boom" and record.__dict__["file"] == "Acme bad.txt"

    # Nothing is left to retry: the next round does not touch the failed file again.
    assert watcher.run_round() == 0 and loaded == ["Acme good.txt", "Beta.txt"]


def test_a_bug_in_sending_the_summary_still_archives_and_is_not_retried(tmp_path: Path) -> None:
    class BrokenSender:
        def send(self, message: object) -> None:
            raise ValueError("a bug in sending")  # not a relay outage: unexpected

    base = tmp_path / "intake"
    drop_bob(make_inbox(base, "acme"), "Acme.txt", "12345")
    drop_bob(make_inbox(base, "beta"), "Beta.txt", "22222")
    calls: list[str] = []

    def loader(engine: object, paths: list[Path], **kw: object) -> list[LoadOutcome]:
        calls.append(paths[0].name)
        return [LoadOutcome(paths[0], "accepted", ["1"], 5, 0, 0, None, None)]

    watcher = stub_intake(base, loader, ["ops@insurer.example"], sender=BrokenSender())
    watcher.run_round()
    watcher.run_round()

    assert calls == ["Acme.txt", "Beta.txt"]  # each loaded once, no loop
    assert watcher.failures == 2
    for account in ("acme", "beta"):
        assert len(visible(base / account / "archive")) == 1
        assert visible(base / account / "archive" / ".processing") == []


# --- lines are read with a cap -----------------------------------------------------------------

FLAT_BYTES = 12 * 1024 * 1024


def flat_file(path: Path, head: bytes = b"VS12345") -> Path:
    """A file of several megabytes without a single line break."""
    with path.open("wb") as out:
        out.write(head)
        chunk = b"A" * (1 << 20)
        for _ in range(FLAT_BYTES >> 20):
            out.write(chunk)
    return path


def test_a_file_without_line_breaks_is_never_read_whole(db_url: str, tmp_path: Path) -> None:
    from bob_loader.intake_binding import unbound_naics

    path = flat_file(tmp_path / "flat.txt")
    engine = db.make_engine(db_url)
    outcomes: list[LoadOutcome] = []
    try:
        peak = peak_bytes(lambda: outcomes.extend(load_files(engine, [path])))
    finally:
        engine.dispose()
    [outcome] = outcomes
    assert outcome.status == "rejected" and outcome.errors == 1
    assert peak < FLAT_BYTES / 4, peak

    found: list[tuple[int, str]] = []
    assert peak_bytes(lambda: found.extend(unbound_naics(path, {"99999"}))) < FLAT_BYTES / 8
    assert found == [(1, "12345")]


# --- the conflict rule across accounts ---------------------------------------------------------


def test_the_same_naic_from_two_accounts_in_one_round_rejects_the_later(
    db_url: str, tmp_path: Path
) -> None:
    base = tmp_path / "intake"
    acme, beta = make_inbox(base, "acme"), make_inbox(base, "beta")
    drop_bob(acme, "Acme.txt", "12345", mtime=OLD)
    drop_bob(beta, "Beta.txt", "12345", first=50, mtime=OLD + 5)  # uploaded later
    sender = MemorySender()
    watcher = real_intake(base, db_url, sender=sender)
    try:
        watcher.run_round()
        [report] = visible(base / "beta" / "outbox")
        text = (base / "beta" / "outbox" / report).read_text()
        assert "status: rejected" in text
        assert "conflict: NAIC 12345 is also carried by a file of another intake account" in text
        assert "Acme.txt" not in text  # another insurer's file name is not disclosed
        assert visible(base / "acme" / "outbox") == []
        with watcher.engine.connect() as conn:
            [(file_name,)] = conn.execute(
                select(BobFile.name).join(BobCurrent, BobCurrent.file_id == BobFile.id)
            ).all()
        assert file_name == "Acme.txt"

        # A later round is another run: the file is welcome then.
        drop_bob(beta, "Beta again.txt", "12345", first=60)
        watcher.run_round()
        with watcher.engine.connect() as conn:
            [(file_name,)] = conn.execute(
                select(BobFile.name).join(BobCurrent, BobCurrent.file_id == BobFile.id)
            ).all()
        assert file_name == "Beta again.txt"
    finally:
        watcher.engine.dispose()


# --- pickup does not wait for loads ------------------------------------------------------------


def test_pickup_goes_on_while_another_account_loads(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A load made slow by the loader's own test hook: it holds its transaction open before
    # the commit, as a million-record load does for most of a minute.
    monkeypatch.setenv("OLV_BOB_TEST_PAUSE_BEFORE_COMMIT", "4")
    base = tmp_path / "intake"
    acme, beta = make_inbox(base, "acme"), make_inbox(base, "beta")
    drop_bob(acme, "Acme.txt", "12345")
    watcher = real_intake(base, db_url)
    stop = threading.Event()
    runner = threading.Thread(
        target=intake_watch.watch, args=(watcher,), kwargs={"poll_seconds": 0.1, "stop": stop}
    )
    runner.start()
    try:
        acme_claims = base / "acme" / "archive" / ".processing"
        deadline = time.monotonic() + 10
        while visible(acme) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # the load is now inside its pause
        drop_bob(beta, "Beta.txt", "22222", first=50)
        dropped = time.monotonic()
        while visible(beta) and time.monotonic() - dropped < 10:
            time.sleep(0.05)
        picked_after = time.monotonic() - dropped
        [in_hand] = visible(acme_claims)
        assert not (acme_claims / in_hand / ".outcome.json").exists()  # still loading
        assert picked_after < 2.0  # the poll interval, not the load, bounds pickup

        deadline = time.monotonic() + 30
        while len(visible(base / "beta" / "archive")) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(30)
        watcher.engine.dispose()
    assert not runner.is_alive()
    assert len(visible(base / "acme" / "archive")) == 1
    assert len(visible(base / "beta" / "archive")) == 1


def test_a_claim_half_built_by_a_crash_is_completed_not_lost(tmp_path: Path) -> None:
    from bob_loader.intake_claims import CLAIMING_PREFIX, ROUND_FILE, discover_accounts

    base = tmp_path / "intake"
    make_inbox(base, "acme")
    [account] = discover_accounts(base)
    with_file = account.processing / f"{CLAIMING_PREFIX}20250101T000000Z_Acme.txt"
    with_file.mkdir()
    (with_file / ROUND_FILE).write_text("1")
    write_bob(with_file / "Acme.txt", "12345", good=3)
    empty = account.processing / f"{CLAIMING_PREFIX}20250101T000001Z_Gone.txt"
    empty.mkdir()
    calls: list[str] = []

    def loader(engine: object, paths: list[Path], **kw: object) -> list[LoadOutcome]:
        calls.append(paths[0].name)
        return [LoadOutcome(paths[0], "accepted", ["12345"], 3, 0, 0, None, None)]

    watcher = stub_intake(base, loader, [])
    assert watcher.run_round() == 1
    assert calls == ["Acme.txt"]
    assert visible(base / "acme" / "archive") == ["20250101T000000Z_Acme.txt"]
    assert sorted(p.name for p in account.processing.iterdir()) == []


def test_a_link_swapped_in_for_an_upload_is_refused_unread(db_url: str, tmp_path: Path) -> None:
    """The insurer wins the race between the listing (which skips links) and the claim: the
    claim renames a link, a FIFO or a hard link. None is followed; each is rejected with a
    report, the round goes on, and nothing of a target shows up in reports, mail or database."""
    from bob_loader.intake_claims import claim, discover_accounts
    from bob_loader.models import BobRecord

    secret_vin = vin(7777)
    # A valid book of business: following the link would load it as this insurer's master.
    secret = write_bob(tmp_path / "secret.txt", "12345", good=3, first=7777)
    secret_bytes = secret.read_bytes()
    base = tmp_path / "intake"
    acme = make_inbox(base, "acme")
    [account] = discover_accounts(base)
    os.symlink(secret, acme / "Acme 20261201.txt")
    os.symlink("/dev/zero", acme / "Acme 20261202.txt")
    os.symlink(tmp_path / "nowhere", acme / "Acme 20261203.txt")
    os.mkfifo(acme / "Acme 20261204.txt")
    os.link(secret, acme / "Acme 20261205.txt")
    for name in ("Acme 20261201.txt", "Acme 20261202.txt", "Acme 20261203.txt"):
        assert claim(account, acme / name) is not None
    for name in ("Acme 20261204.txt", "Acme 20261205.txt"):
        assert claim(account, acme / name) is not None
    drop_bob(acme, "Acme 20261206.txt", "22222")  # a real upload in the next round

    sender = MemorySender()
    # Rejected unread, a file names no NAIC: the account's own address hears of it.
    watcher = real_intake(
        base, db_url, sender=sender, account_emails={"acme": ["ops@acme.example"]}
    )
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(watcher.run_round()), daemon=True)
    try:
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the load worker hangs on a link to /dev/zero or a FIFO"
        with db.transaction(watcher.engine) as session:
            files = [(f.name, f.status) for f in session.scalars(select(BobFile))]
            masters = set(session.scalars(select(BobCurrent.naic)))
            vins = set(session.scalars(select(BobRecord.vin)))
    finally:
        watcher.engine.dispose()

    assert done == [6]
    assert files == [("Acme 20261206.txt", "accepted")]
    assert masters == {"22222"} and secret_vin not in vins
    reports = {p.name: p.read_text() for p in (base / "acme" / "outbox").iterdir()}
    assert len(reports) == 5
    for text in reports.values():
        assert "status: rejected" in text and "not a regular file" in text
        assert "records: 0" in text and secret_vin not in text and "POL-12345" not in text
    mails = [m.get_content() for m in sender.messages]
    assert len(mails) == 6 and not any(secret_vin in body for body in mails)
    # An archived link would lead a reader to its target: each refused entry is archived as an
    # empty file (its name stays taken, so no later claim overwrites its report).
    archived = {
        p.name[17:]: p for p in (base / "acme" / "archive").iterdir() if p != account.processing
    }
    assert len(archived) == 6 and not any(p.is_symlink() for p in archived.values())
    assert archived.pop("Acme 20261206.txt").stat().st_size > 0
    for entry in archived.values():
        st = entry.lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_size == 0 and st.st_nlink == 1
    assert list(account.processing.iterdir()) == []
    assert secret.read_bytes() == secret_bytes  # the target itself is left alone
