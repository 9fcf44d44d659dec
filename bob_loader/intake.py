"""The SFTP intake: ``olv bob watch DIR`` (SPEC §2) — pickup rounds and the processing of what
they claim (the loop and its threads: :mod:`bob_loader.intake_watch`).

Each insurer account is a directory ``DIR/<account>/`` holding ``inbox/`` (the insurer uploads
there), ``outbox/`` (error reports for the insurer) and ``archive/`` (processed files, named
``YYYYMMDDTHHMMSSZ_<name>``). A directory counts as an account once it has an ``inbox/``.

Life of a file, built so that a crash or kill at any moment neither loses nor double-loads it
(the files on disk: :mod:`bob_loader.intake_claims`):

1. *complete*: not a temporary name and its size and mtime unchanged for
   ``OLV_INTAKE_STABLE_SECONDS`` (``OLV_INTAKE_PARTIAL_SECONDS`` for a BoB upload that ends
   mid-record: a stalled transfer);
2. *claimed*: moved out of the inbox into its claim directory, tagged with the pickup round.
   Pickup is all the watch loop's main thread does, so it stays within the poll interval even
   while a large file loads;
3. *loaded* by the one load worker, claim by claim, oldest round first; the files of one
   round, across all accounts, share one NAIC map, so the same-NAIC conflict rule holds for the
   whole round. Loads run one at a time: on SQLite a load holds the only write lock anyway,
   and each load may use the loader's whole memory budget;
4. *finished*: report to ``outbox/``, summary e-mail, file to ``archive/``, claim removed.

A database or file-system error keeps the claim (and the account's later claims, so that a
NAIC's files still load in order) for the next pass; other accounts go on. Any other error is
reported for its file alone — logged without the data, a report in the outbox, the file
archived — and the round goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from bob_loader.intake_binding import reject_unbound
from bob_loader.intake_claims import (
    Claim,
    SavedOutcome,
    StabilityTracker,
    claim,
    discover_accounts,
    fsync_dir,
    load_outcome,
    mark_mailed,
    new_round,
    pending_claims,
    recover_claims,
    safe_name,
    save_outcome,
)
from bob_loader.intake_notify import ContactLookup, send_summary
from bob_loader.intake_report import write_claim_report
from bob_loader.mail import FileSummary, MailSender
from olv.logging import describe_exception

if TYPE_CHECKING:
    from bob_loader.load import LoadOutcome

log = logging.getLogger(__name__)

RETRY_ERRORS = (OperationalError, OSError)
OTHER_ACCOUNT = "a file of another intake account"
FAILED_REASON = (
    "internal error while processing the file; the state's operators have been alerted "
    "and will contact you"
)

Loader = Callable[..., Sequence["LoadOutcome"]]  # bob_loader.load.load_files


class FileHandler(Protocol):
    """Another kind of file an insurer may drop in its inbox (e.g. enforcement transactions,
    ``enforcement.intake``): claimed, archived and mailed about like a BoB file, but loaded by
    its own code. ``handle`` must be repeatable: a crash before its outcome is saved runs it
    again on the same file."""

    def accepts(self, name: str) -> bool: ...

    def handle(
        self,
        engine: Engine,
        file: Path,
        *,
        name: str,
        account: str,
        allowed_naics: set[str] | None,
        outbox: Path,
        claim_name: str,
    ) -> SavedOutcome: ...


def describe(exc: BaseException) -> dict[str, object]:
    """An error as log fields without its message text, which may quote insured data: the
    type and frames (:func:`olv.logging.describe_exception`), the database driver's error
    type, the operating system's error number."""
    facts: dict[str, object] = dict(describe_exception(exc))
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        facts["driver_error"] = type(exc.orig).__name__
    if isinstance(exc, OSError):
        facts["errno"] = exc.errno
        facts["strerror"] = exc.strerror
    return facts


@dataclass
class Intake:
    """One watcher: pickup rounds over all accounts, and the processing of what they claim."""

    base: Path
    engine: Engine
    loader: Loader
    stability: StabilityTracker
    contacts: ContactLookup
    sender: MailSender | None = None
    sender_address: str = "olv-intake@localhost"
    account_emails: dict[str, list[str]] | None = None
    account_naics: dict[str, list[str]] | None = None
    handlers: Sequence[FileHandler] = ()

    failures: int = 0  # claims or pickups that failed and will be retried
    # Per pickup round still being processed: NAIC -> (account, file) of the file carrying it.
    _round_naics: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    # The round a pickup is making right now: its claims wait until it is complete, so the
    # worker sees a round whole (and in upload order) before it loads any of it.
    _open_round: str | None = None

    def run_round(self, stop: threading.Event | None = None) -> int:
        """Pick up, then process everything claimed; returns the number of files finished."""
        self.pick_up(stop)
        return self.process_pending(stop)

    def pick_up(self, stop: threading.Event | None = None) -> int:
        """Claim every complete upload of every account as one round; returns how many."""
        round_id = self._open_round = new_round()
        count = 0
        try:
            for account in discover_accounts(self.base):
                if stop is not None and stop.is_set():
                    break
                try:
                    recover_claims(account)
                    for path in self.stability.ready(account.inbox, self._is_bob_name):
                        self.stability.forget(path)
                        if claim(account, path, round_id) is not None:
                            count += 1
                except OSError as exc:
                    self.failures += 1
                    log.error("pickup failed", extra={"account": account.name, **describe(exc)})
        finally:
            self._open_round = None
        return count

    def _is_bob_name(self, name: str) -> bool:
        """Whether an upload of this name goes to the BoB loader (no other handler takes it):
        only those are held back while they end mid-record; a CSV (IIES) may end without a
        newline."""
        claimed_as = safe_name(name)  # the name handlers are asked with (see _load)
        return not any(handler.accepts(claimed_as) for handler in self.handlers)

    def process_pending(self, stop: threading.Event | None = None) -> int:
        """Load and finish every claim on disk, oldest round first; returns how many finished."""
        still_open = self._open_round  # read before listing: that listing may miss its claims
        claims = sorted(
            (c for a in discover_accounts(self.base) for c in pending_claims(a)),
            key=lambda c: (c.round, _mtime(c), c.account.name, c.dir.name),
        )
        claims = [c for c in claims if c.round != still_open]
        held: set[str] = set()  # accounts whose earlier claim waits for a retry
        done = 0
        for c in claims:
            if stop is not None and stop.is_set():
                break
            if c.account.name in held:
                continue
            try:
                self._handle(c, self._round_naics.setdefault(c.round, {}))
                done += 1
            except RETRY_ERRORS as exc:
                # A database outage, or this account's file-system trouble: the claim stays
                # for the next pass, and so do this account's later ones (a NAIC's files load
                # in order); the other accounts are served meanwhile.
                self.failures += 1
                held.add(c.account.name)
                log.error(
                    "intake failed, retrying next round",
                    extra={"account": c.account.name, "file": c.name, **describe(exc)},
                )
        live = {c.round for c in claims if c.dir.exists()}
        for finished in set(self._round_naics) - live:
            del self._round_naics[finished]
        return done

    def _handle(self, c: Claim, round_naics: dict[str, tuple[str, str]]) -> None:
        try:
            outcome = load_outcome(c)
            if outcome is None and c.has_file:
                self._load(c, round_naics)
            elif outcome is not None and outcome.status != "rejected":
                for naic in outcome.naics:  # loaded before a restart: still counts for its round
                    round_naics.setdefault(naic, (c.account.name, c.name))
            self.finish(c)
        except RETRY_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 — reported for this file alone, then go on
            self._fail(c, exc)

    def _load(self, c: Claim, round_naics: dict[str, tuple[str, str]]) -> None:
        account = c.account
        staging = account.processing / ".reports"
        shutil.rmtree(staging, ignore_errors=True)  # reports of a run killed mid-load
        staging.mkdir()
        allowed = (self.account_naics or {}).get(account.name)
        for handler in self.handlers:
            if handler.accepts(c.name):
                log.info("loading", extra={"account": account.name, "file": c.name})
                outcome = handler.handle(
                    self.engine,
                    c.file,
                    name=c.name,
                    account=account.name,
                    allowed_naics=set(allowed) if allowed is not None else None,
                    outbox=account.outbox,
                    claim_name=c.dir.name,
                )
                save_outcome(c, outcome)
                shutil.rmtree(staging, ignore_errors=True)
                return
        if allowed is not None and reject_unbound(c, set(allowed), staging):
            return
        log.info("loading", extra={"account": account.name, "file": c.name})
        # The loader names the earlier file in a conflict report; another insurer's file name
        # is not this insurer's business.
        claimed = {
            naic: name if owner == account.name else OTHER_ACCOUNT
            for naic, (owner, name) in round_naics.items()
        }
        outcomes = self.loader(
            self.engine, [c.file], report_dir=staging, account=account.name, claimed=claimed
        )
        [o] = outcomes
        for naic in claimed.keys() - round_naics.keys():
            round_naics[naic] = (account.name, c.name)
        if o.report_path is not None and Path(o.report_path).exists():
            os.replace(o.report_path, c.report)
        save_outcome(
            c, SavedOutcome(o.status, list(o.naics), o.records, o.errors, o.warnings, o.reason)
        )
        shutil.rmtree(staging, ignore_errors=True)

    def finish(self, c: Claim) -> None:
        """Hand the results out; every step can be repeated after a crash."""
        outcome = load_outcome(c)
        if outcome is None and c.has_file:
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
        if c.has_file:
            st = c.file.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                os.replace(c.file, c.account.archive / c.dir.name)
            else:
                # A link, FIFO or the like was refused unread (bob_loader.files); kept in the
                # archive it would lead whoever opens it there to what it points at. An empty
                # file stands in: the archive name stays taken, so no later claim reuses it
                # (and overwrites this one's report in the outbox).
                (c.account.archive / c.dir.name).touch()
                c.file.unlink()
            fsync_dir(c.account.archive)
        c.remove()

    def _notify(self, c: Claim, outcome: SavedOutcome, report_name: str | None) -> None:
        if self.sender is None:
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
        send_summary(
            self.sender,
            summary,
            sender_address=self.sender_address,
            contacts=self.contacts,
            account_emails=self.account_emails or {},
        )

    def _fail(self, c: Claim, exc: Exception) -> None:
        """An unexpected error on one file: report it, archive it, carry on with the others.

        A file whose load finished keeps its outcome (it is true); otherwise it is reported as
        ``failed``. Should handing out fail again, it is retried once without the e-mail, and
        as a last resort the claim is set aside for an operator: never retried in a loop.
        """
        self.failures += 1
        log.error(
            "file failed: internal error; reported to the insurer and archived",
            extra={"account": c.account.name, "file": c.name, **describe(exc)},
        )
        last: Exception = exc
        for with_mail in (True, False):
            try:
                outcome = load_outcome(c)
                if outcome is None:
                    report = write_claim_report(c, c.account.processing, "failed", FAILED_REASON)
                    os.replace(report, c.report)
                    outcome = SavedOutcome("failed", [], 0, 0, 0, FAILED_REASON)
                if not with_mail:
                    outcome = mark_mailed(outcome)
                save_outcome(c, outcome)
                self.finish(c)
                return
            except RETRY_ERRORS:
                raise
            except Exception as again:  # noqa: BLE001 — the last resort below must not loop
                last = again
        where = c.set_aside()
        log.critical(
            "file failed and cannot be finished; set aside for an operator",
            extra={"account": c.account.name, "set_aside_as": where.name, **describe(last)},
        )


def _mtime(c: Claim) -> int:
    try:
        return c.file.lstat().st_mtime_ns  # never follow an uploaded name
    except OSError:
        return 0
