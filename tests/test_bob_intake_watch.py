"""The intake's rules, in process: completion, temp names, claims, restart safety, e-mail.

Most tests use a recording stand-in for the loader (the seam ``Intake.loader``); the restart
tests at the end run the real loader on both database engines.
"""

from __future__ import annotations

import os
import re
import smtplib
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from bob_loader import intake_claims, intake_watch
from bob_loader.intake import Intake
from bob_loader.intake_claims import (
    StabilityTracker,
    claim,
    discover_accounts,
    is_temp_name,
    save_outcome,
)
from bob_loader.load import LoadOutcome, load_files
from bob_loader.mail import MemorySender
from olv import db
from tests.helpers.bob_intake_data import vin, write_bob

STAMPED = re.compile(r"^\d{8}T\d{6}Z_(?P<name>.+)$")
OLD = time.time() - 3600  # an mtime long past: the upload is complete


class RecordingLoader:
    """Stands in for ``load_files``: accepts every file, with a two-line error report."""

    def __init__(self, status: str = "accepted", naics: Sequence[str] = ("12345",)) -> None:
        self.calls: list[tuple[str | None, list[str], list[int]]] = []
        self.status = status
        self.naics = list(naics)

    def __call__(self, engine: object, paths: list[Path], **kw: object) -> list[LoadOutcome]:
        report_dir = kw["report_dir"]
        assert isinstance(report_dir, Path)
        account = kw["account"]
        assert account is None or isinstance(account, str)
        self.calls.append((account, [p.name for p in paths], [p.stat().st_size for p in paths]))
        outcomes = []
        for path in paths:
            report = report_dir / f"{path.name}.errors.txt"
            report.write_text("line 7: VIN: 'X': bad\nline 9: NAIC: '1': bad\n")
            outcomes.append(
                LoadOutcome(path, self.status, self.naics, 40, 2, 0, report, None)  # type: ignore[arg-type]
            )
        return outcomes


def make_account(base: Path, name: str = "acme") -> Path:
    inbox = base / name / "inbox"
    inbox.mkdir(parents=True)
    return inbox


def drop(inbox: Path, name: str, content: bytes = b"x" * 600, mtime: float | None = OLD) -> Path:
    path = inbox / name
    path.write_bytes(content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def make_intake(base: Path, loader: object, **kw: object) -> Intake:
    stability = kw.pop("stability", StabilityTracker(2.0))
    contacts = kw.pop("contacts", lambda naics: [f"bob-{n}@insurer.example" for n in naics])
    return Intake(
        base=base,
        engine=None,  # type: ignore[arg-type]  (the stand-in loader needs none)
        loader=loader,  # type: ignore[arg-type]
        stability=stability,  # type: ignore[arg-type]
        contacts=contacts,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_is_temp_name_covers_the_usual_client_conventions() -> None:
    for name in (".upload", "a.txt.part", "a.txt.tmp", "a.txt.filepart", "A.TXT.PART", ".x.txt"):
        assert is_temp_name(name), name
    for name in ("Acme 20250101.txt", "acme_20250101", "part.txt", "tmp"):
        assert not is_temp_name(name), name


def test_processed_file_is_archived_with_timestamp_and_report_goes_to_outbox(
    tmp_path: Path,
) -> None:
    inbox = make_account(tmp_path)
    drop(inbox, "Acme 20250101.txt")
    loader, sender = RecordingLoader(), MemorySender()

    assert make_intake(tmp_path, loader, sender=sender).run_round() == 1

    account = tmp_path / "acme"
    assert loader.calls == [("acme", ["Acme 20250101.txt"], [600])]
    assert listing(inbox) == []
    [archived] = [p for p in listing(account / "archive") if not p.startswith(".")]
    assert STAMPED.match(archived) and STAMPED.match(archived)["name"] == "Acme 20250101.txt"
    assert listing(account / "outbox") == [f"{archived}.errors.txt"]
    assert "line 7" in (account / "outbox" / f"{archived}.errors.txt").read_text()
    assert listing(account / "archive" / ".processing") == []
    [message] = sender.messages
    assert message["To"] == "bob-12345@insurer.example"
    body = message.get_content()
    assert "Acme 20250101.txt" in body and "accepted" in body and "Errors:    2" in body
    assert f"outbox/{archived}.errors.txt" in body


def test_accounts_need_an_inbox_and_get_outbox_and_archive(tmp_path: Path) -> None:
    make_account(tmp_path, "acme")
    (tmp_path / "not-an-account").mkdir()
    (tmp_path / ".hidden" / "inbox").mkdir(parents=True)

    accounts = discover_accounts(tmp_path)

    assert [a.name for a in accounts] == ["acme"]
    assert listing(tmp_path / "acme") == ["archive", "inbox", "outbox"]
    assert listing(tmp_path / "not-an-account") == []


def test_temp_names_are_never_picked_up_and_a_rename_completes_the_upload(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    for name in (".Acme.txt.part", "Acme.txt.part", "Acme.txt.tmp", "Acme.txt.filepart", ".x"):
        drop(inbox, name)
    loader = RecordingLoader()
    watcher = make_intake(tmp_path, loader)

    assert watcher.run_round() == 0
    os.rename(inbox / "Acme.txt.part", inbox / "Acme.txt")
    assert watcher.run_round() == 1
    assert loader.calls[0][1] == ["Acme.txt"]


def test_a_file_is_complete_only_when_size_and_mtime_stay_unchanged(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    path = drop(inbox, "Acme.txt", b"a" * 300, mtime=None)
    clock = {"mono": 1000.0, "wall": path.stat().st_mtime}
    tracker = StabilityTracker(2.0, monotonic=lambda: clock["mono"], wall=lambda: clock["wall"])

    def tick(seconds: float) -> list[Path]:
        clock["mono"] += seconds
        clock["wall"] += seconds
        return tracker.ready(inbox)

    def append() -> None:
        with path.open("ab") as out:
            out.write(b"b" * 300)
        os.utime(path, (clock["wall"], clock["wall"]))

    assert tick(1.5) == []
    append()
    assert tick(1.5) == []  # written 1.5 s ago
    append()
    assert tick(1.9) == []  # still 0.1 s short
    assert tick(0.2) == [path]


def test_a_file_with_a_future_mtime_is_complete_after_being_seen_unchanged(
    tmp_path: Path,
) -> None:
    inbox = make_account(tmp_path)
    path = drop(inbox, "Acme.txt", mtime=time.time() + 86400)  # client clock a day ahead
    clock = {"mono": 1000.0}
    tracker = StabilityTracker(2.0, monotonic=lambda: clock["mono"])

    assert tracker.ready(inbox) == []
    clock["mono"] += 2.0
    assert tracker.ready(inbox) == [path]


def test_a_growing_file_is_not_picked_up_until_it_stops_growing(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    loader = RecordingLoader()
    watcher = make_intake(tmp_path, loader, stability=StabilityTracker(0.8))
    path = inbox / "Acme.txt"
    writing = threading.Event()
    writing.set()

    def write_slowly() -> None:
        with path.open("wb") as out:
            for _ in range(12):
                out.write(b"r" * 302)
                out.flush()
                time.sleep(0.1)
        writing.clear()

    writer = threading.Thread(target=write_slowly)
    writer.start()
    while writing.is_set():
        watcher.run_round()
        assert loader.calls == []
        time.sleep(0.05)
    writer.join()
    deadline = time.monotonic() + 5
    while not loader.calls and time.monotonic() < deadline:
        watcher.run_round()
        time.sleep(0.05)
    assert loader.calls == [("acme", ["Acme.txt"], [12 * 302])]


def test_a_claim_left_by_a_killed_run_is_loaded_again_in_its_own_call(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    account = discover_accounts(tmp_path)[0]
    left = claim(account, drop(inbox, "Acme.txt", b"old" * 200), now=OLD)
    assert left is not None
    drop(inbox, "Acme.txt", b"new" * 300)  # the insurer sent the same name again meanwhile
    loader = RecordingLoader()

    assert make_intake(tmp_path, loader).run_round() == 2

    assert loader.calls == [("acme", ["Acme.txt"], [600]), ("acme", ["Acme.txt"], [900])]
    archived = [p for p in listing(account.archive) if not p.startswith(".")]
    assert len(archived) == 2 and left.dir.name in archived
    assert listing(account.processing) == []


def test_a_claim_with_a_saved_outcome_is_finished_without_loading(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    account = discover_accounts(tmp_path)[0]
    left = claim(account, drop(inbox, "Acme.txt"))
    assert left is not None
    save_outcome(left, intake_claims.SavedOutcome("accepted", ["12345"], 40, 0, 0, None))
    loader, sender = RecordingLoader(), MemorySender()

    make_intake(tmp_path, loader, sender=sender).run_round()

    assert loader.calls == []
    assert listing(account.archive) == [".processing", left.dir.name]
    assert len(sender.messages) == 1


def test_the_same_name_twice_in_one_second_gets_distinct_archive_names(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    account = discover_accounts(tmp_path)[0]
    first = claim(account, drop(inbox, "Acme.txt"), now=OLD)
    second = claim(account, drop(inbox, "Acme.txt"), now=OLD)
    assert first is not None and second is not None
    assert first.dir.name != second.dir.name
    assert first.name == second.name == "Acme.txt"


def test_a_mail_relay_failure_does_not_hold_the_file_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class DownRelay:
        def send(self, message: object) -> None:
            raise smtplib.SMTPServerDisconnected("relay down")

    inbox = make_account(tmp_path)
    drop(inbox, "Acme.txt")

    make_intake(tmp_path, RecordingLoader(), sender=DownRelay()).run_round()

    assert [p for p in listing(tmp_path / "acme" / "archive") if not p.startswith(".")]
    assert "summary e-mail not sent" in caplog.text


def test_without_naic_contacts_the_account_default_address_is_used(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    drop(inbox, "Acme.txt")
    sender = MemorySender()
    watcher = make_intake(
        tmp_path,
        RecordingLoader(status="rejected", naics=()),
        sender=sender,
        contacts=lambda naics: [],
        account_emails={"acme": ["edi@acme.example", "it@acme.example"]},
    )

    watcher.run_round()

    [message] = sender.messages
    assert message["To"] == "edi@acme.example, it@acme.example"
    assert "rejected" in message["Subject"]


def test_an_account_bound_to_naics_cannot_deliver_another_naic(tmp_path: Path) -> None:
    inbox = make_account(tmp_path)
    write_bob(inbox / "Acme.txt", "22222", good=3)
    os.utime(inbox / "Acme.txt", (OLD, OLD))
    loader, sender = RecordingLoader(), MemorySender()
    watcher = make_intake(tmp_path, loader, sender=sender, account_naics={"acme": ["11111"]})

    watcher.run_round()

    assert loader.calls == []
    [report] = listing(tmp_path / "acme" / "outbox")
    text = (tmp_path / "acme" / "outbox" / report).read_text()
    assert "status: rejected" in text and "line 1: NAIC: '22222'" in text
    assert "rejected" in sender.messages[0].get_content()


def test_watch_returns_when_stopped(tmp_path: Path) -> None:
    make_account(tmp_path)
    stop = threading.Event()
    watcher = make_intake(tmp_path, RecordingLoader())
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    started = time.monotonic()
    intake_watch.watch(watcher, poll_seconds=10, stop=stop)
    assert time.monotonic() - started < 5


def test_a_failing_account_is_retried_and_does_not_hold_up_the_others(tmp_path: Path) -> None:
    drop(make_account(tmp_path, "acme"), "Acme.txt")
    drop(make_account(tmp_path, "beta"), "Beta.txt")
    working = RecordingLoader()

    def loader(engine: object, paths: list[Path], **kw: object) -> list[LoadOutcome]:
        if kw["account"] == "acme":
            raise OperationalError("INSERT ...", {}, ConnectionError("database went away"))
        return working(engine, paths, **kw)

    watcher = make_intake(tmp_path, loader)
    assert intake_watch.watch(watcher, poll_seconds=1, stop=threading.Event(), once=True) is False
    assert [call[1] for call in working.calls] == [["Beta.txt"]]
    [kept] = [p for p in listing(tmp_path / "acme" / "archive" / ".processing") if p[0] != "."]
    assert kept.endswith("_Acme.txt")  # the claim stays for the retry

    watcher.loader = working
    watcher.run_round()
    assert [call[1] for call in working.calls] == [["Beta.txt"], ["Acme.txt"]]
    assert listing(tmp_path / "acme" / "archive") == [".processing", kept]


def test_only_one_watcher_per_intake_directory(tmp_path: Path) -> None:
    with intake_watch.exclusive(tmp_path), pytest.raises(intake_watch.WatcherBusy):
        intake_watch.watch(
            make_intake(tmp_path, RecordingLoader()),
            poll_seconds=1,
            stop=threading.Event(),
            once=True,
        )


# --- restart safety with the real loader, both engines ----------------------------------------


class Crash(BaseException):
    """Stands for the process dying (not an ``Exception``: nothing may catch it)."""


def _files_and_records(url: str) -> tuple[int, int]:
    from bob_loader.models import BobFile, BobRecord

    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            files = conn.scalar(select(func.count()).select_from(BobFile))
            records = conn.scalar(select(func.count()).select_from(BobRecord))
    finally:
        engine.dispose()
    return int(files or 0), int(records or 0)


@pytest.mark.parametrize("crash", ["before-load", "after-commit"])
def test_a_crash_around_the_load_leads_to_exactly_one_load(
    db_url: str, tmp_path: Path, crash: str
) -> None:
    inbox = make_account(tmp_path)
    write_bob(inbox / "Acme 20250101.txt", "12345", good=30, bad=1)
    os.utime(inbox / "Acme 20250101.txt", (OLD, OLD))
    engine = db.make_engine(db_url)

    def crashing_loader(engine: object, paths: list[Path], **kw: object) -> list[LoadOutcome]:
        if crash == "after-commit":
            load_files(engine, paths, **kw)  # type: ignore[arg-type]
        raise Crash

    first = make_intake(tmp_path, crashing_loader)
    first.engine = engine
    with pytest.raises(Crash):
        first.run_round()
    sender = MemorySender()
    second = make_intake(tmp_path, load_files, sender=sender)
    second.engine = engine
    second.run_round()
    engine.dispose()

    account = tmp_path / "acme"
    assert listing(inbox) == [] and listing(account / "archive" / ".processing") == []
    assert len([p for p in listing(account / "archive") if not p.startswith(".")]) == 1
    assert _files_and_records(db_url) == (1, 30)
    status = "duplicate" if crash == "after-commit" else "accepted"
    assert status in sender.messages[0]["Subject"]
    if crash == "before-load":
        [report] = listing(account / "outbox")
        assert "line 31" in (account / "outbox" / report).read_text()
    assert vin(0) not in sender.messages[0].get_content()
