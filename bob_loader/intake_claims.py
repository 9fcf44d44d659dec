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

from bob_loader.files import open_regular
from bob_loader.intake_settings import DEFAULT_PARTIAL_SECONDS
from olv.bob.layout import RECORD_LENGTH

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


FileKey = tuple[int, int, int]  # (size, mtime_ns, inode): any write or replacement changes it


@dataclass(slots=True)
class _Seen:
    key: FileKey
    since: float  # monotonic time the key was first seen
    cut: str | None = None  # why the content stops inside a record (None: it does not)
    checked: bool = False  # the tail was read for this key
    held: bool = False  # the hold was logged for this key


def ends_mid_record(path: Path, key: FileKey) -> tuple[FileKey, str | None] | None:
    """Whether the BoB upload ``path`` stops inside a record: the key of the file read and why
    (None when its last line is ended or a whole record), or None when it cannot be read.

    A BoB file has no required trailer, so a stalled in-place upload is a valid-looking file
    with one bad last record: only its tail can tell. A last line of a full record without a
    line end is complete (SPEC: records are *separated* by line ends). An empty file is taken
    as it is (SPEC rejects it whole, and the master stays): holding it would delay that
    report. Only the last record's worth of bytes is read, from a descriptor opened without
    following links.
    """
    try:
        with open_regular(path) as stream:
            st = os.fstat(stream.fileno())
            read_key = (st.st_size, st.st_mtime_ns, st.st_ino)
            if read_key != key:
                return read_key, None  # written to since it was listed: the caller waits
            stream.seek(max(0, st.st_size - RECORD_LENGTH))
            tail = stream.read(RECORD_LENGTH)
    except OSError:
        # Unreadable, a link or gone: judged by the stability rule alone, as before the hold
        # existed; the loader then reports the file as it always did.
        return None
    if not tail or tail.endswith(b"\n") or (b"\n" not in tail and len(tail) >= RECORD_LENGTH):
        return read_key, None
    last = len(tail) - tail.rfind(b"\n") - 1
    return read_key, (
        f"its last line has no line end and is {last} characters, "
        f"short of a {RECORD_LENGTH}-character record"
    )


class StabilityTracker:
    """Decides when an upload is complete: (size, mtime, inode) unchanged long enough.

    Observed time is measured on the monotonic clock, so a file whose mtime the client set into
    the future still becomes ready; a file whose mtime is already old enough (renamed into the
    inbox, or left there while the watcher was down) is ready at first sight.

    A BoB upload whose content stops inside a record (:func:`ends_mid_record`) is a client that
    stalled mid-transfer far more often than a finished file: it must stay unchanged for
    ``partial_seconds`` (``OLV_INTAKE_PARTIAL_SECONDS``) instead, after which it is taken as
    any other file, so one that really ends that way is still loaded and reported. With
    ``stable_seconds`` 0 the operator has said every upload is renamed in whole: none is held.
    """

    def __init__(
        self,
        stable_seconds: float,
        *,
        partial_seconds: float = DEFAULT_PARTIAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stable_seconds = stable_seconds
        self.partial_seconds = partial_seconds if stable_seconds > 0 else 0.0
        self._monotonic = monotonic
        self._wall = wall
        self._seen: dict[Path, _Seen] = {}

    def ready(self, inbox: Path, whole_records: Callable[[str], bool] | None = None) -> list[Path]:
        """Complete uploads in ``inbox``, oldest first.

        ``whole_records`` tells the names of BoB files (made of 300-character records), the
        only ones whose tail is checked; None means every name is one.
        """
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
            if seen is None or seen.key != key:
                self._seen[path] = seen = _Seen(key, now)
            # Unchanged since first seen, or since its mtime when that is earlier.
            quiet = max(now - seen.since, wall - st.st_mtime)
            if quiet < self.stable_seconds:
                continue
            if whole_records is None or whole_records(entry.name):
                if not seen.checked:
                    verdict = ends_mid_record(path, key)
                    if verdict is not None and verdict[0] != key:
                        self._seen[path] = _Seen(verdict[0], now)  # still being written
                        continue
                    seen.checked = True
                    seen.cut = verdict[1] if verdict is not None else None
                if seen.cut is not None:
                    if quiet < self.partial_seconds:
                        self._log_held(inbox, entry.name, seen)
                        continue
                    log.warning(
                        "upload taken although it ends mid-record: unchanged past the grace",
                        extra=self._facts(inbox, entry.name, seen),
                    )
            found.append((st.st_mtime_ns, entry.name, path))
        for gone in [p for p in self._seen if p.parent == inbox and p not in current]:
            del self._seen[gone]
        return [path for _, _, path in sorted(found)]

    def _log_held(self, inbox: Path, name: str, seen: _Seen) -> None:
        # Once per state of the file: every poll would repeat it for the whole grace.
        if not seen.held:
            seen.held = True
            log.info(
                "upload held back: it ends mid-record, waiting for the rest",
                extra=self._facts(inbox, name, seen),
            )

    def _facts(self, inbox: Path, name: str, seen: _Seen) -> dict[str, object]:
        return {
            "account": inbox.parent.name,
            "file": safe_name(name),
            "reason": seen.cut,
            "size": seen.key[0],
            "grace_seconds": self.partial_seconds,
        }

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
