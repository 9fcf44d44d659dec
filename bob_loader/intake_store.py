"""The intake's files on disk: accounts, claims and their saved outcomes.

``DIR/<account>/`` holds ``inbox/``, ``outbox/`` and ``archive/``. A file in hand is *claimed* by
renaming it to ``archive/.processing/<stamp>_<name>/<name>``: the claim directory records that
the watcher owns the file (surviving a crash), and its name is the file's final archive name.
Next to the file, ``.outcome.json`` keeps the load's outcome and ``.report`` its error report
until both are handed out — names starting with ``.`` can never be an uploaded file's name.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("bob_loader.intake")

PROCESSING = ".processing"
OUTCOME_FILE = ".outcome.json"
REPORT_FILE = ".report"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STAMP_LENGTH = 16  # len("20250131T235959Z")


@dataclass(frozen=True, slots=True)
class SavedOutcome:
    """The part of a load outcome the watcher needs after a restart (``.outcome.json``)."""

    status: str
    naics: list[str]
    records: int
    errors: int
    warnings: int
    reason: str | None
    mailed: bool = False


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def processing(self) -> Path:
        return self.archive / PROCESSING


@dataclass(frozen=True, slots=True)
class Claim:
    account: Account
    dir: Path  # archive/.processing/<stamp>_<name>/

    @property
    def name(self) -> str:
        return self.dir.name[STAMP_LENGTH + 1 :]

    @property
    def file(self) -> Path:
        return self.dir / self.name

    @property
    def outcome_path(self) -> Path:
        return self.dir / OUTCOME_FILE

    @property
    def report(self) -> Path:
        return self.dir / REPORT_FILE


def discover_accounts(base: Path) -> list[Account]:
    """Accounts under ``base``, with ``outbox/``, ``archive/`` and the claim area created."""
    accounts = []
    for root in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        account = Account(root.name, root)
        if not account.inbox.is_dir():
            continue
        try:
            account.outbox.mkdir(exist_ok=True)
            account.archive.mkdir(exist_ok=True)
            account.processing.mkdir(mode=0o700, exist_ok=True)
        except PermissionError as exc:
            # One mis-provisioned account must not stop the intake of all the others.
            log.error("account skipped: %s", exc, extra={"account": account.name})
            continue
        accounts.append(account)
    return accounts


def fsync_dir(path: Path) -> None:
    # A rename is durable only once its directory is synced; the claim must survive power loss.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def claim(account: Account, path: Path, now: float | None = None) -> Claim | None:
    """Move an inbox file into its claim directory; None if the insurer removed it meanwhile."""
    stamp_time = int(time.time() if now is None else now)
    while True:
        stamp = time.strftime(STAMP_FORMAT, time.gmtime(stamp_time))
        final = f"{stamp}_{path.name}"
        # The same name delivered twice within one second: step the stamp to keep names unique.
        if not (account.processing / final).exists() and not (account.archive / final).exists():
            break
        stamp_time += 1
    target = Claim(account, account.processing / final)
    target.dir.mkdir()
    try:
        os.rename(path, target.file)
    except FileNotFoundError:
        target.dir.rmdir()
        return None
    fsync_dir(target.dir)
    fsync_dir(account.inbox)
    return target


def pending_claims(account: Account) -> list[Claim]:
    """Claims an earlier run left unfinished, in the order they were made."""
    return [
        Claim(account, d)
        for d in sorted(account.processing.iterdir())
        if d.is_dir() and not d.name.startswith(".") and len(d.name) > STAMP_LENGTH + 1
    ]


def load_outcome(c: Claim) -> SavedOutcome | None:
    if not c.outcome_path.exists():
        return None
    return SavedOutcome(**json.loads(c.outcome_path.read_text()))


def save_outcome(c: Claim, outcome: SavedOutcome) -> None:
    _write_json(c.outcome_path, asdict(outcome))


def mark_mailed(outcome: SavedOutcome) -> SavedOutcome:
    return SavedOutcome(**{**asdict(outcome), "mailed": True})
