"""``olv registrations import FILE``: the state's registrations, plate-only or with registrants
(SPEC §5 and §6).

The header names the columns: ``plate,state,vin`` always, then any of :data:`OPTIONAL` in any
order. A re-import upserts by plate and state; a column the file does not carry is left as it
was (a plate-only file never erases registrant data). Bad rows are reported with their line
numbers and skipped; a file that cannot be read as such a CSV changes nothing (one transaction).

The file is streamed into a temporary staging table (PostgreSQL: one COPY; SQLite: multi-row
inserts of ``BATCH`` rows), then one set-based upsert per table merges it, so memory stays flat
for millions of rows and the tables' indexes are walked once, in plate order.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import Connection, Engine, text

from bob_loader.intake_claims import safe_name
from enforcement.matching import resolve_key
from olv import db, normalize
from olv.bob.lines import capped_lines
from olv.errors import OlvError
from portal import security_log

REQUIRED = ("plate", "state", "vin")
OPTIONAL = (
    "reg_class",
    "entity_type",
    "last_name",
    "first_name",
    "middle_name",
    "dob",
    "dl_number",
    "fein",
    "zip",
    "address1",
    "address2",
    "city",
    "reg_effective",
    "reg_expires",
    "status",
)
_WIDTHS = {
    "reg_class": 10,
    "last_name": 100,
    "first_name": 50,
    "middle_name": 50,
    "dl_number": 20,
    "fein": 9,
    "zip": 10,
    "address1": 100,
    "address2": 100,
    "city": 60,
}
_DATES = ("dob", "reg_effective", "reg_expires")
STATUSES = ("active", "expired", "surrendered")
BATCH = {"postgresql": 20_000, "sqlite": 2_000}
MAX_REPORTED = 1000  # problems listed one by one; the rest are counted
# No registration row comes near this (its widest has under 700 characters); a longer line is
# reported and skipped, never held in memory (as ``olv policies import`` does).
MAX_CSV_LINE = 4096
_STATE = re.compile(r"^[A-Z]{2}$")
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_STAGE = "olv_registration_stage"


class RegistrationFileError(OlvError):
    """The file as a whole cannot be imported (not text, wrong header): nothing is."""

    exit_code = 2

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; nothing was imported")


@dataclass
class ImportResult:
    rows: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def problem(self, line: int, message: str) -> None:
        self.skipped += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(f"line {line}: {message}")


def _text_lines(path: Path, result: ImportResult) -> Iterator[str]:
    """Text lines for the CSV reader, each read with a length cap."""
    with path.open("rb") as raw:
        head = raw.read(4096)
        if b"\x00" in head or head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise RegistrationFileError(f"{safe_name(path.name)} is not a UTF-8 text file")
        raw.seek(0)
        for number, line, overlong in capped_lines(raw, MAX_CSV_LINE):
            if overlong:
                result.problem(number, f"longer than {MAX_CSV_LINE} bytes")
                # An empty line, which the CSV reader skips, keeps its line numbers right.
                yield "\n"
                continue
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise RegistrationFileError(
                    f"{safe_name(path.name)} is not a UTF-8 text file"
                ) from None


def _header(path: Path, header: list[str] | None) -> tuple[str, ...]:
    names = tuple(h.strip().lower() for h in header or ())
    unknown = [n for n in names if n not in REQUIRED + OPTIONAL]
    if names[:3] != REQUIRED or unknown or len(set(names)) != len(names):
        raise RegistrationFileError(
            f"{safe_name(path.name)}: the first line must be {','.join(REQUIRED)} followed by "
            f"any of {','.join(OPTIONAL)}"
        )
    return names


def _row(names: tuple[str, ...], cells: list[str]) -> tuple[dict[str, object] | None, str]:
    if not normalize.is_field_text("".join(cells)):  # one scan of the row, not one per cell
        return None, "control characters"
    values = dict(zip(names, map(str.strip, cells), strict=True))
    plate = normalize.plate(values["plate"])
    state = values["state"].upper()
    vin = normalize.vin(values["vin"])
    if not plate or len(plate) > 12:
        return None, "plate: 1 to 12 letters or digits"
    if not _STATE.match(state):
        return None, "state: two letters"
    if not vin or len(vin) > 25:
        return None, "vin: 1 to 25 characters"
    row: dict[str, object] = {"plate": plate, "state": state, "vin": vin}
    for name in names[3:]:
        value = values[name]
        if not value:
            row[name] = None
        elif name == "entity_type":
            if value not in ("1", "2"):
                return None, "entity_type: 1 (individual) or 2 (organization)"
            row[name] = int(value)
        elif name in _DATES:
            try:
                row[name] = date.fromisoformat(value) if _ISO.match(value) else None
            except ValueError:
                row[name] = None
            if row[name] is None:
                return None, f"{name}: a real date YYYY-MM-DD"
        elif name == "status":
            if value.lower() not in STATUSES:
                return None, f"status: one of {', '.join(STATUSES)}"
            row[name] = value.lower()
        elif len(value) > _WIDTHS[name]:
            return None, f"{name}: at most {_WIDTHS[name]} characters"
        else:
            row[name] = " ".join(value.upper().split())
    return row, ""


def _rows(path: Path, result: ImportResult) -> tuple[tuple[str, ...], Iterator[dict[str, object]]]:
    reader = csv.reader(_text_lines(path, result))
    try:
        names = _header(path, next(reader, None))
    except csv.Error as exc:
        raise RegistrationFileError(f"{safe_name(path.name)}: not CSV ({exc})") from None

    def rows() -> Iterator[dict[str, object]]:
        try:
            for cells in reader:
                if not cells or not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(names):
                    result.problem(
                        reader.line_num, f"expected {len(names)} fields, found {len(cells)}"
                    )
                    continue
                row, problem = _row(names, cells)
                if row is None:
                    result.problem(reader.line_num, problem)
                else:
                    yield row
        except csv.Error as exc:
            raise RegistrationFileError(
                f"{safe_name(path.name)}: line {reader.line_num}: not CSV ({exc})"
            ) from None

    return names, rows()


def _key(row: dict[str, object]) -> str | None:
    return resolve_key(
        row.get("entity_type"),  # type: ignore[arg-type]
        row.get("last_name"),  # type: ignore[arg-type]
        row.get("first_name"),  # type: ignore[arg-type]
        row.get("middle_name"),  # type: ignore[arg-type]
        row.get("dob"),  # type: ignore[arg-type]
        row.get("zip"),  # type: ignore[arg-type]
    )


class _Writer:
    """Streams the file's rows into a temporary staging table (PostgreSQL: one COPY; SQLite:
    multi-row inserts), then merges them with one set-based statement per table.

    Staging the whole file first keeps the merge to one pass over each table and its indexes
    (a temporary table writes no WAL), and lets the merge keep the file's last line for a plate
    that appears twice. A row whose values are already stored is not rewritten, so a monthly
    re-import of an unchanged file leaves no dead rows behind.
    """

    def __init__(self, conn: Connection, names: tuple[str, ...], batch: int) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.batch = batch
        self.extra = list(names[3:])
        self.with_registrant = bool(self.extra)
        self.columns = [*REQUIRED, *self.extra] + (["resolve_key"] if "last_name" in names else [])
        self.pending: list[dict[str, object]] = []
        self.line = 0
        types = {"entity_type": "SMALLINT", **dict.fromkeys(_DATES, "DATE")}
        ddl = ", ".join(f"{c} {types.get(c, 'VARCHAR(100)')}" for c in self.columns)
        if self.pg:
            conn.execute(
                text(f"CREATE TEMPORARY TABLE {_STAGE} (line BIGINT, {ddl}) ON COMMIT DROP")
            )
            # The merge sorts the file by plate; let it do so in memory for a few million rows.
            conn.execute(text("SET LOCAL work_mem = '64MB'"))
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            self._copy_cm = cursor.copy(
                f"COPY {_STAGE} (line, {', '.join(self.columns)}) FROM STDIN"
            )
            self._copy = self._copy_cm.__enter__()
        else:
            conn.execute(text(f"DROP TABLE IF EXISTS {_STAGE}"))
            conn.execute(text(f"CREATE TEMPORARY TABLE {_STAGE} (line INTEGER, {ddl})"))

    def add(self, row: dict[str, object]) -> None:
        self.line += 1
        if "resolve_key" in self.columns:
            row["resolve_key"] = _key(row)
        if self.pg:  # psycopg buffers the COPY stream itself
            self._copy.write_row([self.line, *(row.get(c) for c in self.columns)])
            return
        self.pending.append({"line": self.line, **{c: row.get(c) for c in self.columns}})
        if len(self.pending) >= self.batch:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        placeholders = ", ".join(f":{c}" for c in ["line", *self.columns])
        columns = ", ".join(["line", *self.columns])
        self.conn.execute(
            text(f"INSERT INTO {_STAGE} ({columns}) VALUES ({placeholders})"), self.pending
        )
        self.pending = []

    def merge(self) -> None:
        """Upsert registrations, then registrants, from the staged file (its last line wins)."""
        self._flush()
        if self.pg:
            self._copy_cm.__exit__(None, None, None)
            self.conn.execute(text(f"ANALYZE {_STAGE}"))
            latest = (
                f"SELECT DISTINCT ON (plate, state) * FROM {_STAGE} "
                f"ORDER BY plate, state, line DESC"
            )
        else:
            self.conn.execute(text(f"CREATE INDEX {_STAGE}_key ON {_STAGE} (plate, state, line)"))
            latest = (
                f"SELECT * FROM {_STAGE} s WHERE NOT EXISTS (SELECT 1 FROM {_STAGE} l "
                f"WHERE l.plate = s.plate AND l.state = s.state AND l.line > s.line) "
                f"ORDER BY plate, state"
            )
        self.conn.execute(
            text(
                f"INSERT INTO registrations (plate, state, vin) SELECT plate, state, vin "
                f"FROM ({latest}) s WHERE true ON CONFLICT (plate, state) DO UPDATE "
                f"SET vin = excluded.vin WHERE registrations.vin <> excluded.vin"
            )
        )
        if not self.with_registrant:
            return
        cols = self.columns[3:]
        target = ", ".join(cols)
        source = ", ".join(f"s.{c}" for c in cols)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols)
        changed = " OR ".join(f"registrants.{c} IS DISTINCT FROM excluded.{c}" for c in cols)
        if not self.pg:
            changed = " OR ".join(f"registrants.{c} IS NOT excluded.{c}" for c in cols)
        self.conn.execute(
            text(
                f"INSERT INTO registrants (registration_id, {target}) SELECT r.id, {source} "
                f"FROM ({latest}) s JOIN registrations r "
                f"ON r.plate = s.plate AND r.state = s.state "
                f"WHERE true ON CONFLICT (registration_id) DO UPDATE SET {updates} WHERE {changed}"
            )
        )

    def close(self) -> None:
        if self.pg:
            return  # ON COMMIT DROP
        self.conn.execute(text(f"DROP TABLE IF EXISTS {_STAGE}"))

    def abort(self) -> None:
        """Leave the COPY (the transaction around it is rolled back by the caller)."""
        if self.pg:
            with contextlib.suppress(Exception):
                self._copy_cm.__exit__(RuntimeError, RuntimeError("aborted"), None)


def import_file(engine: Engine, path: Path) -> ImportResult:
    """Upsert every good row of ``path`` in one transaction."""
    result = ImportResult()
    size = BATCH.get(engine.dialect.name, 2000)
    names, rows = _rows(path, result)
    with db.transaction(engine) as session:
        writer = _Writer(session.connection(), names, size)
        try:
            for row in rows:
                writer.add(row)
                result.rows += 1
        except BaseException:
            writer.abort()
            raise
        writer.merge()
        writer.close()
        security_log.record(
            session,
            security_log.REGISTRATIONS_IMPORTED,
            # The name need not be text (a byte 0xFF); the log keeps a displayable one.
            detail=f"{result.rows} rows from {safe_name(path.name)}",
            source="cli",
        )
    return result
