"""``olv bob load``: validate book-of-business files and make them the NAICs' master data.

Per file, in order:

1. checksum; a file already *accepted* with the same checksum is a ``duplicate`` (not reloaded);
2. register the file (status ``loading``, committed at once: an operator sees what is running;
   a load killed here leaves a ``loading`` row that the rerun simply takes over);
3. ONE transaction: stream the records into ``bob_record`` under the new file id (batched
   executemany / COPY), then — unless the file is rejected — point each of its NAICs at it in
   ``bob_current`` and commit. A rejected file's transaction is rolled back instead, so the
   previous master is never touched;
4. delete the superseded generation (separate transaction; see ``bob_loader.models``);
5. write ``<file>.errors.txt`` when there were problems or the file was rejected.

Rejected whole: not a regular file, empty, not text, trailer mismatch, more records with errors
than the allowed rate, or a NAIC that an earlier file of the same run already carries (the
conflict rule). Checksum and records are read from one descriptor
(:func:`bob_loader.files.open_regular`), so an uploaded name swapped for a link is never followed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sqlalchemy import Connection, Engine, Row

from bob_loader import store
from bob_loader.bulk import writer_for
from bob_loader.files import open_regular, sha256_of
from bob_loader.intake_claims import safe_name
from bob_loader.report import ReportHeader, ReportWriter
from bob_loader.settings import BobSettings, get_bob_settings
from bob_loader.store import Tally
from olv.bob.errors import BobFileError
from olv.bob.parser import iter_bob
from olv.bob.validate import PROFILES
from olv.logging import describe_exception

log = logging.getLogger(__name__)

Status = Literal["accepted", "rejected", "duplicate"]


@dataclass
class LoadOutcome:
    path: Path
    status: Status
    naics: list[str]
    records: int  # records loaded
    errors: int
    warnings: int
    report_path: Path | None  # the <file>.errors.txt written, if any
    reason: str | None  # why rejected / which earlier load it duplicates


@dataclass
class _Options:
    report_dir: Path | None
    profile: str
    max_error_rate: float
    account: str | None
    progress: bool
    follow_links: bool
    settings: BobSettings


def load_files(
    engine: Engine,
    paths: list[Path],
    *,
    report_dir: Path | None = None,
    profile: str | None = None,
    max_error_rate: float | None = None,
    account: str | None = None,
    progress: bool = False,
    claimed: dict[str, str] | None = None,
    follow_links: bool = False,
) -> list[LoadOutcome]:
    """Load each file in turn (see the module docstring); one outcome per path, in order.

    ``profile`` and ``max_error_rate`` default to ``OLV_BOB_PROFILE`` / ``OLV_BOB_MAX_ERROR_RATE``.
    ``progress`` shows a progress bar, and only when stderr is a terminal. ``claimed`` (NAIC →
    name of the file of this run that carries it) extends the conflict rule over several calls:
    the intake passes one map per pickup round, shared by all its accounts; it is updated here.
    ``follow_links`` lets an operator's command line name a file through a link; an uploaded
    file that is a link is rejected instead (:func:`bob_loader.files.open_regular`).
    """
    settings = get_bob_settings()
    if profile is not None and profile not in PROFILES:
        raise ValueError(f"unknown validation profile {profile!r}; expected one of {PROFILES}")
    opts = _Options(
        report_dir=report_dir,
        profile=profile or settings.profile,
        max_error_rate=settings.max_error_rate if max_error_rate is None else max_error_rate,
        account=account,
        progress=progress and sys.stderr.isatty(),
        follow_links=follow_links,
        settings=settings,
    )
    if claimed is None:
        claimed = {}
    outcomes = []
    for path in paths:
        outcome = _load_one(engine, Path(path), opts, claimed)
        name = safe_name(Path(path).name)
        if outcome.status != "rejected":
            for naic in outcome.naics:
                claimed.setdefault(naic, name)
        log.info(
            "bob file processed",
            extra={
                "file": name,
                "status": outcome.status,
                "records": outcome.records,
                "errors": outcome.errors,
                "warnings": outcome.warnings,
            },
        )
        outcomes.append(outcome)
    return outcomes


def _load_one(engine: Engine, path: Path, opts: _Options, claimed: dict[str, str]) -> LoadOutcome:
    report = ReportWriter(path, opts.report_dir)
    try:
        stream = open_regular(path, follow_links=opts.follow_links)
    except OSError as exc:
        reason = f"cannot read the file: {exc.strerror or exc}"
        return _rejected(path, report, opts, Tally(), reason, None)
    with stream:
        try:
            size = os.fstat(stream.fileno()).st_size
            digest = sha256_of(stream)
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror or exc}"
            return _rejected(path, report, opts, Tally(), reason, None)
        return _load_stream(engine, path, stream, size, digest, report, opts, claimed)


def _load_stream(
    engine: Engine,
    path: Path,
    stream: BinaryIO,
    size: int,
    digest: str,
    report: ReportWriter,
    opts: _Options,
    claimed: dict[str, str],
) -> LoadOutcome:
    # A name need not be text (a byte 0xFF from an old client): the database, the report and
    # the log get the displayable one the intake also uses.
    name = safe_name(path.name)
    file_id, earlier = store.register(engine, name, digest, size, opts.account)
    if earlier is not None:
        outcome = _duplicate(path, earlier)
        # Its load may have been killed after the swap, inside the clean-up: finish that.
        store.collect_garbage(engine, outcome.naics)
        return outcome

    tally = Tally()
    reason: str | None = None
    started = time.perf_counter()
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            earlier = store.accepted_row(conn, file_id)
            if earlier is not None:  # a concurrent load of the same bytes finished first
                tx.rollback()
                return _duplicate(path, earlier)
            try:
                _stream_records(conn, stream, name, size, file_id, opts, claimed, tally, report)
            except BobFileError as exc:
                reason = exc.reason
            reason = reason or tally.conflict
            if reason is None and tally.bad_records > opts.max_error_rate * tally.records:
                reason = (
                    f"error rate {100 * tally.bad_records / tally.records:.2f} % "
                    f"({tally.bad_records} of {tally.records} records) is above the limit "
                    f"of {100 * opts.max_error_rate:.2f} %"
                )
            if reason is not None:
                tx.rollback()  # drops the records streamed so far: the old master stays
            else:
                store.swap(conn, file_id, tally.per_naic)
                # SQLite has no row lock: a concurrent load of the same bytes may have committed
                # while this one streamed. Having written, this transaction now holds the write
                # lock, so the re-read is final (on PostgreSQL the row lock made it so already).
                earlier = store.accepted_row(conn, file_id)
                if earlier is not None:
                    tx.rollback()
                    report.discard()
                    return _duplicate(path, earlier)
                store.finish_file_row(conn, file_id, "accepted", None, tally)
                if tally.errors or tally.warnings:
                    report.prepare(_header(path, "accepted", None, tally, opts, digest))
                _pause_for_crash_tests(opts.settings)
                tx.commit()
                log.info(
                    "bob master swapped",
                    extra={
                        "file": name,
                        "naics": len(tally.per_naic),
                        "records": tally.loaded,
                        "seconds": round(time.perf_counter() - started, 2),
                    },
                )
        except BaseException:
            report.discard()
            if tx.is_active:
                tx.rollback()
            raise

    if reason is not None:
        with engine.begin() as conn:
            store.finish_file_row(conn, file_id, "rejected", reason, tally)
        return _rejected(path, report, opts, tally, reason, digest)

    report_path = report.publish() if tally.errors or tally.warnings else None
    try:
        store.collect_garbage(engine, tally.naics)
        store.refresh_statistics(engine)
    except Exception as exc:  # noqa: BLE001 - the load is committed: report it as loaded
        # The superseded rows stay until the NAIC's next load collects them.
        log.warning("cleanup after a load failed", extra={"file": name, **describe_exception(exc)})
    return LoadOutcome(
        path, "accepted", tally.naics, tally.loaded, tally.errors, tally.warnings, report_path, None
    )


def _stream_records(
    conn: Connection,
    stream: BinaryIO,
    name: str,
    size: int,
    file_id: int,
    opts: _Options,
    claimed: dict[str, str],
    tally: Tally,
    report: ReportWriter,
) -> None:
    writer = writer_for(conn)
    make_row = writer.row
    batch: list[tuple[object, ...]] = []
    batch_size = opts.settings.batch_size
    cap = opts.settings.max_stored_issues
    per_naic = tally.per_naic
    with _progress(opts.progress, name, size) as advance:
        for parsed in iter_bob(stream, opts.profile):
            tally.records += 1
            if parsed.issues:
                for issue in parsed.issues:
                    report.add(issue)
                    if issue.severity == "error":
                        tally.errors += 1
                    else:
                        tally.warnings += 1
                    if len(tally.stored) < cap:
                        tally.stored.append(issue)
            record = parsed.record
            if record is None:
                tally.bad_records += 1
                continue
            naic = record.naic
            if naic not in per_naic:
                if naic in claimed and tally.conflict is None:
                    # Rejected, but read on so that the report lists every other problem too.
                    tally.conflict = (
                        f"conflict: NAIC {naic} is also carried by {claimed[naic]}, an earlier "
                        "file of this run; send one file per NAIC"
                    )
                per_naic[naic] = 0
            per_naic[naic] += 1
            if tally.conflict is not None:
                continue
            batch.append(make_row(file_id, record))
            if len(batch) >= batch_size:
                writer.write(batch)
                batch.clear()
                advance(stream)
        if batch:
            writer.write(batch)
        advance(stream)


@contextmanager
def _progress(enabled: bool, name: str, size: int) -> Iterator:
    """A callable that moves the bar to the stream's position (a no-op without a terminal)."""
    if not enabled:
        yield lambda _stream: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(name, total=size)

        def advance(stream: BinaryIO) -> None:
            bar.update(task, completed=stream.tell())

        yield advance


def _pause_for_crash_tests(settings: BobSettings) -> None:
    """Test hook ``OLV_BOB_TEST_PAUSE_BEFORE_COMMIT``: hold the swap open so a crash test can
    kill the process inside it. Never set in production."""
    if settings.test_pause_before_commit > 0:
        log.warning(
            "test hook: pausing before the swap commit",
            extra={"seconds": settings.test_pause_before_commit},
        )
        time.sleep(settings.test_pause_before_commit)


def _header(
    path: Path, status: str, reason: str | None, tally: Tally, opts: _Options, digest: str | None
) -> ReportHeader:
    return ReportHeader(
        file=safe_name(path.name),
        status=status,
        reason=reason,
        records=tally.records,
        loaded=tally.loaded if status == "accepted" else 0,
        bad_records=tally.bad_records,
        errors=tally.errors,
        warnings=tally.warnings,
        max_error_rate=opts.max_error_rate,
        naics=tally.naics,
        sha256=digest,
        processed_at=store.now().isoformat(timespec="seconds"),
    )


def _rejected(
    path: Path,
    report: ReportWriter,
    opts: _Options,
    tally: Tally,
    reason: str,
    digest: str | None,
) -> LoadOutcome:
    report_path = report.finish(_header(path, "rejected", reason, tally, opts, digest))
    return LoadOutcome(
        path, "rejected", tally.naics, 0, tally.errors, tally.warnings, report_path, reason
    )


def _duplicate(path: Path, earlier: Row[Any]) -> LoadOutcome:
    when = earlier.processed_at.isoformat(timespec="seconds") if earlier.processed_at else "?"
    reason = f"already loaded as {earlier.name} (file id {earlier.id}) at {when}"
    naics = [n for n in earlier.naics.split(",") if n]
    return LoadOutcome(path, "duplicate", naics, 0, 0, 0, None, reason)
