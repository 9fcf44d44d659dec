"""``olv policies import``: load the insurer policy store from BoB or CSV files.

A file's policies are upserted; each policy it names gets exactly the coverage rows the file
lists for it (so re-importing a corrected file replaces, not duplicates). Bad rows — including
values longer than the store's columns — are reported with their line numbers and skipped; the
whole import is one transaction.

Memory stays flat whatever the file size: rows are read line by line (with a length cap) and
written a chunk at a time; which policies this file has already named is kept in a temporary
table of the same transaction, not in memory; and only the first problems are kept (all of them
are passed to the caller's ``on_issue`` as they are found).
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from olv import db, iicmva, normalize
from olv.bob.errors import BobFileError, Issue
from olv.bob.lines import capped_lines
from olv.bob.parser import looks_like_bob, read_bob
from olv.bob.validate import parse_date
from olv.errors import OlvError
from service.models import Coverage, Policy

T = TypeVar("T")

CSV_COLUMNS = (
    "naic",
    "policy_number",
    "policy_type",
    "vin",
    "effective_date",
    "expiration_date",
    "cancel_date",
    "pending_review",
)
_TRUE = {"1", "y", "yes", "true", "t"}
_FALSE = {"", "0", "n", "no", "false", "f"}
# No CSV row of policy data comes near this; a longer line is reported, never held in memory.
MAX_CSV_LINE = 4096
MAX_KEPT_ISSUES = 1000


def _column_length(column: object) -> int:
    kind = getattr(column, "type", None)
    assert isinstance(kind, String) and kind.length is not None
    return kind.length


# The store's column sizes (service.models): a longer value is reported, never truncated.
MAX_LENGTH = {
    "policy_number": _column_length(Policy.__table__.c.policy_number),
    "policy_key": _column_length(Policy.__table__.c.policy_key),
    "vin": _column_length(Coverage.__table__.c.vin),
}

IssueCallback = Callable[[Path, Issue], None]


@dataclass(slots=True)
class Row:
    line: int
    naic: str
    policy_number: str
    policy_key: str
    policy_type: str
    vin: str
    effective: date
    expiration: date | None
    cancellation: date | None
    pending_review: bool


@dataclass
class ImportResult:
    path: Path
    rows: int = 0  # coverage rows imported
    policies: int = 0
    skipped: int = 0  # rows not imported because of errors
    issue_count: int = 0
    issues: list[Issue] = field(default_factory=list)  # the first MAX_KEPT_ISSUES
    on_issue: IssueCallback | None = field(default=None, repr=False)

    def add(self, issues: Iterable[Issue], *, skips_row: bool) -> None:
        for issue in issues:
            self.issue_count += 1
            if len(self.issues) < MAX_KEPT_ISSUES:
                self.issues.append(issue)
            if self.on_issue is not None:
                self.on_issue(self.path, issue)
        if skips_row:
            self.skipped += 1

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]


class ImportFileError(OlvError):
    """A file that cannot be imported at all (unknown format, missing CSV columns, …): the
    whole import is refused."""

    exit_code = 2

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; nothing was imported")


def _csv_date(
    line: int, values: dict[str, str | None], name: str, issues: list[Issue], required: bool
) -> date | None:
    text = _get(values, name)
    if not text:
        if required:
            issues.append(Issue(line, name, text, "mandatory"))
        return None
    value = None
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        value = parse_date(text.replace("-", ""))
    elif len(text) == 8:
        value = parse_date(text)
    if value is None:
        issues.append(Issue(line, name, text, "not a real date (YYYY-MM-DD or YYYYMMDD)"))
    return value


def _get(values: dict[str, str | None], key: str) -> str:
    return (values.get(key) or "").strip()


def _too_long(line: int, name: str, value: str, issues: list[Issue]) -> None:
    limit = MAX_LENGTH[name]
    if len(value) > limit:
        issues.append(Issue(line, name, value[:limit], f"longer than {limit} characters"))


def _csv_lines(stream: BinaryIO, result: ImportResult) -> Iterator[str]:
    """Text lines for the CSV reader; an overlong or undecodable line is reported and given
    to the reader as an empty line, which it skips (so line numbers stay right)."""
    for number, raw, overlong in capped_lines(stream, MAX_CSV_LINE):
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        elif number == 1 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise ImportFileError(f"{result.path}: UTF-16 text; save the CSV as UTF-8")
        problem = f"longer than {MAX_CSV_LINE} characters" if overlong else None
        if problem is None:
            try:
                yield raw.decode("utf-8")
                continue
            except UnicodeDecodeError:
                problem = "not UTF-8 text"
        shown = raw[:40].decode("utf-8", "backslashreplace")
        result.add([Issue(number, "record", shown, problem)], skips_row=True)
        yield "\n"


def _csv_row(line: int, values: dict[str, str | None], issues: list[Issue]) -> Row | None:
    naic = _get(values, "naic")
    if not normalize.is_naic(naic):
        issues.append(Issue(line, "naic", naic, "must be 5 digits"))
    number = _get(values, "policy_number")
    key = normalize.policy_key(number)
    if not key:
        issues.append(Issue(line, "policy_number", number, "mandatory"))
    _too_long(line, "policy_number", number, issues)
    _too_long(line, "policy_key", key, issues)
    ptype = _get(values, "policy_type").upper() or iicmva.VEHICLE_SPECIFIC
    if ptype not in iicmva.POLICY_TYPES:
        issues.append(
            Issue(line, "policy_type", ptype, "must be " + " or ".join(iicmva.POLICY_TYPES))
        )
    vin = normalize.vin(_get(values, "vin"))
    if not vin and ptype == iicmva.VEHICLE_SPECIFIC:
        issues.append(Issue(line, "vin", "", f"mandatory for {iicmva.VEHICLE_SPECIFIC} policies"))
    _too_long(line, "vin", vin, issues)
    effective = _csv_date(line, values, "effective_date", issues, True)
    expiration = _csv_date(line, values, "expiration_date", issues, False)
    cancellation = _csv_date(line, values, "cancel_date", issues, False)
    flag = _get(values, "pending_review").lower()
    if flag not in _TRUE | _FALSE:
        issues.append(Issue(line, "pending_review", flag, "must be true or false"))
    if issues or effective is None:
        return None
    return Row(
        line, naic, number, key, ptype, vin, effective, expiration, cancellation, flag in _TRUE
    )


def _csv_rows(path: Path, result: ImportResult) -> Iterator[Row]:
    with path.open("rb") as stream:
        reader = csv.DictReader(_csv_lines(stream, result))
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in CSV_COLUMNS[:5] if c not in header]
        if missing:
            raise ImportFileError(f"{path}: CSV header lacks column(s) {', '.join(missing)}")
        reader.fieldnames = header
        for values in reader:
            issues: list[Issue] = []
            row = _csv_row(reader.line_num, values, issues)
            if issues:
                result.add(issues, skips_row=row is None)
            if row is not None:
                yield row


def _bob_rows(path: Path, result: ImportResult) -> Iterator[Row]:
    for parsed in read_bob(path):
        record = parsed.record
        if parsed.issues:
            result.add(parsed.issues, skips_row=record is None)
        if record is None:
            continue
        yield Row(
            record.line,
            record.naic,
            record.policy_number,
            record.policy_key,
            record.policy_type,
            record.vin,
            record.effective_date,
            record.expiration_date,
            None,
            False,
        )


def rows_of(path: Path, result: ImportResult) -> Iterator[Row]:
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        return _csv_rows(path, result)
    if looks_like_bob(path):
        return _bob_rows(path, result)
    raise ImportFileError(f"{path}: neither a CSV with a header row nor a 300-column BoB file")


_BATCH = 2000
_IN_LIST = 500
# The policies the current file has named so far, and whether any of its rows flags them for
# review. A temporary table of the import's own transaction: memory stays flat however many
# policies a file holds.
_SEEN = Table(
    "olv_import_seen",
    MetaData(),
    Column("policy_id", Integer, primary_key=True),
    Column("flagged", Boolean, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


# Bulk UPDATE/DELETE through the session: no ORM objects are in play, and the default
# synchronization would fetch every matched id — a million of them for a whole book.
_NO_SYNC = {"synchronize_session": False}


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert_for(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT, which has ``ON CONFLICT``."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _upsert(session: Session, latest: dict[tuple[str, str], Row]) -> dict[tuple[str, str], int]:
    """Insert or update the policies in one statement; returns their ids.

    ``INSERT … ON CONFLICT DO UPDATE`` instead of look-up-then-write: looking policies up in a
    table that grows inside the import's own transaction degraded to scans on PostgreSQL.
    """
    table = Policy.__table__
    stmt = _insert_for(session)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.naic, table.c.policy_key],
        set_={
            "policy_number": stmt.excluded.policy_number,
            "policy_type": stmt.excluded.policy_type,
        },
    ).returning(table.c.id, table.c.naic, table.c.policy_key)
    rows = [
        {
            "naic": naic,
            "policy_key": key,
            "policy_number": row.policy_number,
            "policy_type": row.policy_type,
            "pending_review": False,
        }
        for (naic, key), row in latest.items()
    ]
    return {(naic, key): pid for pid, naic, key in session.execute(stmt, rows)}


def _first_seen(session: Session, ids: list[int]) -> list[int]:
    """The ids among ``ids`` that this file names for the first time (now recorded as seen)."""
    stmt = (
        _insert_for(session)(_SEEN)
        .on_conflict_do_nothing(index_elements=[_SEEN.c.policy_id])
        .returning(_SEEN.c.policy_id)
    )
    rows = [{"policy_id": pid, "flagged": False} for pid in ids]
    return list(session.execute(stmt, rows).scalars()) if rows else []


def _store(session: Session, rows: Iterable[Row], result: ImportResult) -> None:
    """Set-based, a few thousand rows at a time: an import of a whole book stays in seconds."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, _BATCH)):
        latest = {(r.naic, r.policy_key): r for r in chunk}  # the last row names number/type
        ids = _upsert(session, latest)
        first_seen = _first_seen(session, list(ids.values()))
        for part in _chunks(first_seen, _IN_LIST):
            # The file lists a policy's vehicles completely: its earlier rows are replaced.
            session.execute(
                delete(Coverage).where(Coverage.policy_id.in_(part)), execution_options=_NO_SYNC
            )
        result.policies += len(first_seen)
        session.execute(
            insert(Coverage),
            [
                {
                    "policy_id": ids[(r.naic, r.policy_key)],
                    "naic": r.naic,
                    "vin": r.vin or None,
                    "effective_date": r.effective,
                    "expiration_date": r.expiration,
                    "cancel_date": r.cancellation,
                }
                for r in chunk
            ],
        )
        flagged = sorted({ids[(r.naic, r.policy_key)] for r in chunk if r.pending_review})
        for part in _chunks(flagged, _IN_LIST):
            session.execute(update(_SEEN).where(_SEEN.c.policy_id.in_(part)).values(flagged=True))
        result.rows += len(chunk)
    # A policy is pending review when any of this file's rows says so (and only then).
    flag = select(_SEEN.c.flagged).where(_SEEN.c.policy_id == Policy.id).scalar_subquery()
    session.execute(
        update(Policy).where(Policy.id.in_(select(_SEEN.c.policy_id))).values(pending_review=flag),
        execution_options=_NO_SYNC,
    )
    session.execute(delete(_SEEN))


def import_files(
    engine: Engine, paths: list[Path], on_issue: IssueCallback | None = None
) -> list[ImportResult]:
    """Import every file in one transaction; a file-level error aborts and changes nothing.

    ``on_issue`` receives every problem as it is found (the results keep only the first).
    """
    results = [ImportResult(p, on_issue=on_issue) for p in paths]
    with db.transaction(engine) as session:
        _SEEN.create(session.connection())
        for result in results:
            try:
                _store(session, rows_of(result.path, result), result)
            except BobFileError as exc:
                raise ImportFileError(f"{result.path}: {exc.reason}") from None
        if session.get_bind().dialect.name == "sqlite":
            # SQLite keeps a temporary table for the connection's life.
            _SEEN.drop(session.connection())
            # A sample suffices (SQLite would otherwise read every index entry of a large store).
            session.execute(text("PRAGMA analysis_limit=1000"))
        # Fresh statistics, so the SOAP look-ups use the covering indexes from the first
        # request (without them SQLite prefers the unique key's index, which lacks the columns).
        session.execute(text("ANALYZE policy"))
        session.execute(text("ANALYZE coverage"))
    return results
