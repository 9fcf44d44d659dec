"""``olv policies import``: load the insurer policy store from BoB or CSV files.

A file's policies are upserted; each policy it names gets exactly the coverage rows the file
lists for it (so re-importing a corrected file replaces, not duplicates). Bad rows are reported
with their line numbers and skipped; the whole import is one transaction.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, delete, insert, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bob_loader.errors import BobFileError, Issue
from bob_loader.parser import looks_like_bob, read_bob
from bob_loader.validate import parse_date
from olv import db, normalize
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
    rows: int = 0
    policies: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]


class ImportFileError(ValueError):
    """A file that cannot be imported at all (unknown format, missing CSV columns, …)."""


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


def _csv_rows(path: Path, result: ImportResult) -> Iterator[Row]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in CSV_COLUMNS[:5] if c not in header]
        if missing:
            raise ImportFileError(f"{path}: CSV header lacks column(s) {', '.join(missing)}")
        reader.fieldnames = header
        for values in reader:
            line = reader.line_num
            issues: list[Issue] = []
            naic = _get(values, "naic")
            if not (naic.isdigit() and len(naic) == 5):
                issues.append(Issue(line, "naic", naic, "must be 5 digits"))
            number = _get(values, "policy_number")
            key = normalize.policy_key(number)
            if not key:
                issues.append(Issue(line, "policy_number", number, "mandatory"))
            ptype = _get(values, "policy_type").upper() or "VS"
            if ptype not in ("VS", "NS"):
                issues.append(Issue(line, "policy_type", ptype, "must be VS or NS"))
            vin = normalize.vin(_get(values, "vin"))
            if not vin and ptype == "VS":
                issues.append(Issue(line, "vin", "", "mandatory for VS policies"))
            effective = _csv_date(line, values, "effective_date", issues, True)
            expiration = _csv_date(line, values, "expiration_date", issues, False)
            cancellation = _csv_date(line, values, "cancel_date", issues, False)
            flag = _get(values, "pending_review").lower()
            if flag not in _TRUE | _FALSE:
                issues.append(Issue(line, "pending_review", flag, "must be true or false"))
            if issues:
                result.issues.extend(issues)
                continue
            assert effective is not None
            yield Row(
                line,
                naic,
                number,
                key,
                ptype,
                vin,
                effective,
                expiration,
                cancellation,
                flag in _TRUE,
            )


def _bob_rows(path: Path, result: ImportResult) -> Iterator[Row]:
    for parsed in read_bob(path):
        result.issues.extend(parsed.issues)
        record = parsed.record
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


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _upsert(session: Session, latest: dict[tuple[str, str], Row]) -> dict[tuple[str, str], int]:
    """Insert or update the policies in one statement; returns their ids.

    ``INSERT … ON CONFLICT DO UPDATE`` instead of look-up-then-write: looking policies up in a
    table that grows inside the import's own transaction degraded to scans on PostgreSQL.
    """
    table = Policy.__table__
    dialect = session.get_bind().dialect.name
    stmt = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
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


def _store(session: Session, rows: Iterable[Row], result: ImportResult) -> None:
    """Set-based, a few thousand rows at a time: an import of a whole book stays in seconds."""
    known: dict[tuple[str, str], int] = {}  # policies this file has named so far
    flagged: set[int] = set()
    iterator = iter(rows)
    while chunk := list(islice(iterator, _BATCH)):
        latest = {(r.naic, r.policy_key): r for r in chunk}  # the last row names number/type
        ids = _upsert(session, latest)
        first_seen = [pid for ident, pid in ids.items() if ident not in known]
        for part in _chunks(first_seen, _IN_LIST):
            # The file lists a policy's vehicles completely: its earlier rows are replaced.
            session.execute(delete(Coverage).where(Coverage.policy_id.in_(part)))
        result.policies += len(first_seen)
        known.update(ids)
        session.execute(
            insert(Coverage),
            [
                {
                    "policy_id": known[(r.naic, r.policy_key)],
                    "naic": r.naic,
                    "vin": r.vin or None,
                    "effective_date": r.effective,
                    "expiration_date": r.expiration,
                    "cancel_date": r.cancellation,
                }
                for r in chunk
            ],
        )
        flagged.update(known[(r.naic, r.policy_key)] for r in chunk if r.pending_review)
        result.rows += len(chunk)
    # A policy is pending review when any of this file's rows says so (and only then).
    for part in _chunks(list(known.values()), _IN_LIST):
        session.execute(update(Policy).where(Policy.id.in_(part)).values(pending_review=False))
    for part in _chunks(sorted(flagged), _IN_LIST):
        session.execute(update(Policy).where(Policy.id.in_(part)).values(pending_review=True))


def import_files(engine: Engine, paths: list[Path]) -> list[ImportResult]:
    """Import every file in one transaction; a file-level error aborts and changes nothing."""
    results = [ImportResult(p) for p in paths]
    with db.transaction(engine) as session:
        for result in results:
            try:
                _store(session, rows_of(result.path, result), result)
            except BobFileError as exc:
                raise ImportFileError(f"{result.path}: {exc.reason}") from None
        if session.get_bind().dialect.name == "postgresql":
            # Fresh statistics, so the SOAP look-ups use the indexes from the first request.
            session.execute(text("ANALYZE policy"))
            session.execute(text("ANALYZE coverage"))
    return results
