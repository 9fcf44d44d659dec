"""The intake's files on disk: accounts, complete uploads, claims and their saved outcomes.

``DIR/<account>/`` holds ``inbox/``, ``outbox/`` and ``archive/``. A file in hand is *claimed* by
renaming it to ``archive/.processing/<stamp>_<name>/<name>``: the claim directory records that
the watcher owns the file (surviving a crash), and its name is the file's final archive name.
Next to the file, ``.round`` names the pickup round the claim belongs to (the conflict rule of
SPEC §2 applies per round), ``.outcome.json`` keeps the load's outcome and ``.report`` its error
report until both are handed out — names starting with ``.`` are never an uploaded file's name.

Uploaded names are the insurer's: they may hold line breaks, other control characters or
undecodable bytes, and be as long as the file system allows. The claim gives the file a
printable, bounded name (:func:`safe_name`), so every later use — archive and report names,
log lines, the e-mail — is safe.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("bob_loader.intake")

PROCESSING = ".processing"
OUTCOME_FILE = ".outcome.json"
REPORT_FILE = ".report"
ROUND_FILE = ".round"
SET_ASIDE_PREFIX = ".failed_"
CLAIMING_PREFIX = ".claiming_"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STAMP_LENGTH = 16  # len("20250131T235959Z")
# File names are at most 255 bytes; the archive name adds the stamp and the outbox report
# ".errors.txt", and the loader's temporary report names a few more characters.
MAX_NAME_BYTES = 200
TEMP_SUFFIXES = (".part", ".tmp", ".filepart")


def is_temp_name(name: str) -> bool:
    """Names SFTP clients give to uploads in progress (and hidden files): never picked up."""
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


def printable(text: str) -> str:
    """``text`` with every non-printable character (line breaks, other controls, undecodable
    bytes, format characters) replaced by ``?``: safe in a mail header, a log line, a name."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def safe_name(name: str) -> str:
    """The name an uploaded file is archived and reported under: printable and bounded."""
    clean = printable(name)
    encoded = clean.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        clean = encoded[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return clean


@dataclass(frozen=True, slots=True)
class SavedOutcome:
    """The part of a load outcome the watcher needs after a restart (``.outcome.json``).

    ``status`` is the loader's (accepted, rejected, duplicate) or ``failed``: an unexpected
    error stopped the file, which is then archived and reported as such.
    """

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
    def has_file(self) -> bool:
        """Whether the claimed entry is still there — also when it is a link to nowhere, which
        ``exists()`` would deny while it still blocks removing the claim."""
        return os.path.lexists(self.file)

    @property
    def outcome_path(self) -> Path:
        return self.dir / OUTCOME_FILE

    @property
    def report(self) -> Path:
        return self.dir / REPORT_FILE

    @property
    def round(self) -> str:
        """The pickup round; claims of older versions have none and sort first."""
        try:
            return (self.dir / ROUND_FILE).read_text()
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        """Drop the (handed-out) claim directory."""
        for name in (OUTCOME_FILE, ROUND_FILE):
            (self.dir / name).unlink(missing_ok=True)
        self.dir.rmdir()

    def set_aside(self) -> Path:
        """Move a claim that cannot be finished out of the way; it is never retried."""
        target = self.account.processing / f"{SET_ASIDE_PREFIX}{self.dir.name}"
        os.rename(self.dir, target)
        return target


class StabilityTracker:
    """Decides when an upload is complete: (size, mtime, inode) unchanged long enough.

    Observed time is measured on the monotonic clock, so a file whose mtime the client set into
    the future still becomes ready; a file whose mtime is already old enough (renamed into the
    inbox, or left there while the watcher was down) is ready at first sight.
    """

    def __init__(
        self,
        stable_seconds: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stable_seconds = stable_seconds
        self._monotonic = monotonic
        self._wall = wall
        self._seen: dict[Path, tuple[tuple[int, int, int], float]] = {}

    def ready(self, inbox: Path) -> list[Path]:
        """Complete uploads in ``inbox``, oldest first."""
        now, wall = self._monotonic(), self._wall()
        found: list[tuple[int, str, Path]] = []
        current: set[Path] = set()
        for entry in os.scandir(inbox):
            if is_temp_name(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            path = Path(entry.path)
            st = entry.stat(follow_symlinks=False)
            key = (st.st_size, st.st_mtime_ns, st.st_ino)
            current.add(path)
            seen = self._seen.get(path)
            if seen is None or seen[0] != key:
                self._seen[path] = seen = (key, now)
            if now - seen[1] >= self.stable_seconds or wall - st.st_mtime >= self.stable_seconds:
                found.append((st.st_mtime_ns, entry.name, path))
        for gone in [p for p in self._seen if p.parent == inbox and p not in current]:
            del self._seen[gone]
        return [path for _, _, path in sorted(found)]

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)


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
            log.error("account skipped: %s", exc.strerror, extra={"account": account.name})
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


def new_round() -> str:
    """An identifier for one pickup round; later rounds sort after earlier ones."""
    return f"{time.time_ns():020d}"


def claim(
    account: Account, path: Path, round_id: str | None = None, now: float | None = None
) -> Claim | None:
    """Move an inbox file into its claim directory; None if the insurer removed it meanwhile.

    The claim is assembled under a hidden name and renamed into view complete (file and round
    inside), so the load worker never sees half a claim; :func:`recover_claims` completes one
    that a crash interrupted.
    """
    name = safe_name(path.name)
    if name != path.name:
        log.warning(
            "file name not printable or too long: renamed",
            extra={"account": account.name, "uploaded_as": ascii(path.name), "file": name},
        )
    stamp_time = int(time.time() if now is None else now)
    while True:
        stamp = time.strftime(STAMP_FORMAT, time.gmtime(stamp_time))
        final = f"{stamp}_{name}"
        # The same name delivered twice within one second: step the stamp to keep names unique.
        if not (account.processing / final).exists() and not (account.archive / final).exists():
            break
        stamp_time += 1
    building = account.processing / f"{CLAIMING_PREFIX}{final}"
    building.mkdir()
    (building / ROUND_FILE).write_text(round_id or new_round())
    try:
        os.rename(path, building / name)
    except FileNotFoundError:
        shutil.rmtree(building)
        return None
    target = Claim(account, account.processing / final)
    os.rename(building, target.dir)
    fsync_dir(account.processing)
    fsync_dir(account.inbox)
    return target


def recover_claims(account: Account) -> None:
    """Complete the claims a crash left half-built: with their file in view, else drop them."""
    for building in account.processing.iterdir():
        if not building.name.startswith(CLAIMING_PREFIX):
            continue
        final = building.name[len(CLAIMING_PREFIX) :]
        if os.path.lexists(building / final[STAMP_LENGTH + 1 :]):
            os.rename(building, account.processing / final)
        else:
            shutil.rmtree(building)
    fsync_dir(account.processing)


def pending_claims(account: Account) -> list[Claim]:
    """Claims not yet finished (made by this run or left by an earlier one), oldest first."""
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
    tmp = c.outcome_path.with_name(c.outcome_path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(outcome)))
    os.replace(tmp, c.outcome_path)


def mark_mailed(outcome: SavedOutcome) -> SavedOutcome:
    return SavedOutcome(**{**asdict(outcome), "mailed": True})
