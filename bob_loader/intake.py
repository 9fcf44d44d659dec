"""The SFTP intake: ``olv bob watch DIR`` (SPEC §2).

Each insurer account is a directory ``DIR/<account>/`` holding ``inbox/`` (the insurer uploads
there), ``outbox/`` (error reports for the insurer) and ``archive/`` (processed files, named
``YYYYMMDDTHHMMSSZ_<name>``). A directory counts as an account once it has an ``inbox/``.

Life of a file, built so that a crash or kill at any moment neither loses nor double-loads it:

1. *complete*: not a temporary name (``.x``, ``x.part``, ``x.tmp``, ``x.filepart``) and its size
   and mtime unchanged for ``OLV_INTAKE_STABLE_SECONDS`` (a file renamed into the inbox whose
   mtime is already that old is taken at once);
2. *claimed*: renamed to ``archive/.processing/<stamp>_<name>/<name>`` — the claim directory is
   the watcher's record that the file is in hand, and its name is the final archive name;
3. *loaded*: all files claimed for one account in one round go to one ``load_files`` call (so the
   loader's same-NAIC conflict rule sees them together); the outcome and the error report are
   then saved into the claim directory (``.outcome.json``, ``.report``);
4. *finished*: report to ``outbox/``, summary e-mail, file to ``archive/``, claim removed.

On start and in every round, claims left by an earlier run are finished first: without an
outcome they are loaded again — a load that was killed left nothing behind, and one that had
committed is recognised by its checksum and reported as a duplicate, never loaded twice.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import smtplib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from bob_loader import layout
from bob_loader.errors import Issue
from bob_loader.intake_store import (
    Account,
    Claim,
    SavedOutcome,
    claim,
    discover_accounts,
    fsync_dir,
    load_outcome,
    mark_mailed,
    pending_claims,
    save_outcome,
)
from bob_loader.mail import FileSummary, MailSender, summary_message
from bob_loader.report import ReportHeader, ReportWriter

if TYPE_CHECKING:
    from bob_loader.load import LoadOutcome

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".tmp", ".filepart")
RETRY_ERRORS = (OperationalError, OSError)


def is_temp_name(name: str) -> bool:
    """Names SFTP clients give to uploads in progress (and hidden files): never picked up."""
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES)


Loader = Callable[..., Sequence["LoadOutcome"]]  # bob_loader.load.load_files
ContactLookup = Callable[[Sequence[str]], list[str]]


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


def db_contacts(engine: Engine) -> ContactLookup:
    """Contact addresses of NAICs from the loader's ``bob_contact`` table."""
    from bob_loader.models import InsurerContact

    def lookup(naics: Sequence[str]) -> list[str]:
        if not naics:
            return []
        with engine.connect() as conn:
            rows = conn.execute(
                select(InsurerContact.email)
                .where(InsurerContact.naic.in_(list(naics)))
                .order_by(InsurerContact.email)
                .distinct()
            )
            return [r[0] for r in rows]

    return lookup


@dataclass
class Intake:
    """One watcher: rounds over all accounts; the loop and signals live in :func:`watch`."""

    base: Path
    engine: Engine
    loader: Loader
    stability: StabilityTracker
    contacts: ContactLookup
    sender: MailSender | None = None
    sender_address: str = "olv-intake@localhost"
    account_emails: dict[str, list[str]] | None = None
    account_naics: dict[str, list[str]] | None = None

    failures: int = 0  # account rounds that failed and will be retried

    def run_round(self, stop: threading.Event | None = None) -> int:
        """Process every account once; returns the number of files finished."""
        done = 0
        for account in discover_accounts(self.base):
            if stop is not None and stop.is_set():
                break
            try:
                done += self._account_round(account, stop)
            except RETRY_ERRORS as exc:
                # A database outage, or one account's file-system trouble: its claims stay in
                # place for the next round, and the other accounts are served meanwhile.
                self.failures += 1
                log.error(
                    "intake failed, retrying next round: %s",
                    exc,
                    exc_info=True,
                    extra={"account": account.name},
                )
        return done

    def _account_round(self, account: Account, stop: threading.Event | None) -> int:
        # Leftovers from an earlier (killed) run form their own load call: they belong to that
        # run, and a new upload of the same name must not share the report directory.
        done = self.process(account, pending_claims(account))
        if stop is not None and stop.is_set():
            return done
        claims = []
        for path in self.stability.ready(account.inbox):
            self.stability.forget(path)
            c = claim(account, path)
            if c is not None:
                claims.append(c)
        return done + self.process(account, claims)

    def process(self, account: Account, claims: Sequence[Claim]) -> int:
        to_load = [c for c in claims if load_outcome(c) is None and c.file.exists()]
        if to_load:
            self._load(account, to_load)
        for c in claims:
            self.finish(c)
        return len(claims)

    def _load(self, account: Account, claims: Sequence[Claim]) -> None:
        staging = account.processing / ".reports"
        shutil.rmtree(staging, ignore_errors=True)  # reports of a run killed mid-load
        staging.mkdir()
        allowed = (self.account_naics or {}).get(account.name)
        if allowed is not None:
            claims = [c for c in claims if not _reject_unbound(c, set(allowed), staging)]
            if not claims:
                return
        log.info(
            "loading %d file(s)",
            len(claims),
            extra={"account": account.name, "files": [c.name for c in claims]},
        )
        outcomes = self.loader(
            self.engine, [c.file for c in claims], report_dir=staging, account=account.name
        )
        by_path = {Path(o.path).resolve(): o for o in outcomes}
        for c in claims:
            o = by_path.get(c.file.resolve())
            if o is None:
                raise RuntimeError(f"the loader returned no outcome for {c.name}")
            if o.report_path is not None and Path(o.report_path).exists():
                os.replace(o.report_path, c.report)
            save_outcome(
                c,
                SavedOutcome(o.status, list(o.naics), o.records, o.errors, o.warnings, o.reason),
            )
        shutil.rmtree(staging, ignore_errors=True)

    def finish(self, c: Claim) -> None:
        """Hand the results out; every step can be repeated after a crash."""
        outcome = load_outcome(c)
        if outcome is None and c.file.exists():
            raise RuntimeError(f"claim {c.dir.name} has a file but no load outcome")
        report_name = f"{c.dir.name}.errors.txt"
        if c.report.exists():
            os.replace(c.report, c.account.outbox / report_name)
        if outcome is not None:
            has_report = (c.account.outbox / report_name).exists()
            log.info(
                "file %s",
                outcome.status,
                extra={
                    "account": c.account.name,
                    "file": c.name,
                    "status": outcome.status,
                    "naics": outcome.naics,
                    "records": outcome.records,
                    "errors": outcome.errors,
                    "warnings": outcome.warnings,
                    "reason": outcome.reason,
                },
            )
            if not outcome.mailed:
                self._notify(c, outcome, report_name if has_report else None)
                save_outcome(c, mark_mailed(outcome))
        if c.file.exists():
            os.replace(c.file, c.account.archive / c.dir.name)
            fsync_dir(c.account.archive)
        c.outcome_path.unlink(missing_ok=True)
        c.dir.rmdir()

    def _notify(self, c: Claim, outcome: SavedOutcome, report_name: str | None) -> None:
        if self.sender is None:
            return
        recipients = self.contacts(outcome.naics) or (self.account_emails or {}).get(
            c.account.name, []
        )
        if not recipients:
            log.warning(
                "no contact for the summary e-mail",
                extra={"account": c.account.name, "file": c.name, "naics": outcome.naics},
            )
            return
        summary = FileSummary(
            account=c.account.name,
            file_name=c.name,
            archived_as=c.dir.name,
            status=outcome.status,
            naics=outcome.naics,
            records=outcome.records,
            errors=outcome.errors,
            warnings=outcome.warnings,
            reason=outcome.reason,
            report_name=report_name,
        )
        message = summary_message(summary, sender=self.sender_address, recipients=recipients)
        try:
            self.sender.send(message)
        except (smtplib.SMTPException, OSError) as exc:
            # The load is done and the report is in the outbox; a mail relay outage must not
            # hold the file back or stop the intake.
            log.error(
                "summary e-mail not sent: %s",
                exc,
                extra={"account": c.account.name, "file": c.name},
            )


def unbound_naics(path: Path, allowed: set[str]) -> list[tuple[int, str]]:
    """(line, NAIC) of records whose well-formed NAIC the account is not bound to.

    Malformed NAICs are left to the loader's validation, which reports them anyway.
    """
    naic = layout.BY_NAME["naic"].slice
    found = []
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            value = raw[naic].decode("latin-1")
            if raw.startswith(layout.TRAILER_TAG.encode()) or not value.isdigit():
                continue
            if len(value) == 5 and value not in allowed:
                found.append((number, value))
    return found


def _reject_unbound(c: Claim, allowed: set[str], staging: Path) -> bool:
    """Reject a file carrying NAICs its account is not bound to, without loading any of it."""
    try:
        found = unbound_naics(c.file, allowed)
    except OSError:
        return False  # unreadable: the loader rejects it with a report saying so
    if not found:
        return False
    naics = sorted({n for _, n in found})
    reason = (
        f"NAIC(s) {', '.join(naics)} not allowed for account {c.account.name} "
        f"(allowed: {', '.join(sorted(allowed))})"
    )
    writer = ReportWriter(c.file, staging)
    for line, value in found:
        writer.add(Issue(line, "NAIC", value, f"not allowed for account {c.account.name}"))
    header = ReportHeader(
        file=c.name,
        status="rejected",
        reason=reason,
        records=0,
        loaded=0,
        bad_records=len(found),
        errors=len(found),
        warnings=0,
        max_error_rate=0.0,
        naics=naics,
        sha256=None,
        processed_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    os.replace(writer.finish(header), c.report)
    save_outcome(c, SavedOutcome("rejected", naics, 0, len(found), 0, reason))
    return True


class WatcherBusy(RuntimeError):
    """Another watcher holds the intake directory."""


@contextmanager
def exclusive(base: Path) -> Iterator[None]:
    """One watcher per intake directory: two would race for the same uploads.

    The lock is taken on the directory itself, which the watcher may not be allowed to write.
    """
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise WatcherBusy(f"another watcher is running on {base}") from exc
        yield
    finally:
        os.close(fd)


def watch(
    intake: Intake, *, poll_seconds: float, stop: threading.Event, once: bool = False
) -> bool:
    """Run rounds until ``stop`` is set (or one round with ``once``); False if any failed."""
    with exclusive(intake.base):
        while True:
            intake.run_round(stop)
            if once or stop.is_set():
                return intake.failures == 0
            stop.wait(poll_seconds)
