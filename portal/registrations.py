"""Plate → VIN: importing the state's registrations (CSV header ``plate,state,vin``).

Plates are normalized with :func:`olv.normalize.plate`, states upper-cased, VINs with
:func:`olv.normalize.vin`. A re-import upserts by plate and state. Bad rows are reported with
their line numbers and skipped; a file that cannot be read as such a CSV changes nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from olv import db, normalize
from olv.errors import OlvError
from portal import security_log
from portal.models import Registration

HEADER = ("plate", "state", "vin")
BATCH = 2000  # rows per INSERT: 6,000 parameters, within SQLite's limit
_STATE = re.compile(r"^[A-Z]{2}$")


class RegistrationFileError(OlvError):
    """The file as a whole cannot be imported (not text, wrong header): nothing is."""

    exit_code = 2

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; nothing was imported")


@dataclass
class ImportResult:
    rows: int = 0
    errors: list[str] = field(default_factory=list)


def _rows(path: Path, result: ImportResult) -> Iterator[dict[str, str]]:
    raw = path.read_bytes()
    if b"\x00" in raw[:4096] or raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RegistrationFileError(f"{path.name} is not a UTF-8 text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RegistrationFileError(f"{path.name} is not a UTF-8 text file") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(h.strip().lower() for h in header) != HEADER:
        raise RegistrationFileError(f"{path.name}: the first line must be {','.join(HEADER)}")
    for row in reader:
        line = reader.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) != 3:
            result.errors.append(f"line {line}: expected 3 fields, found {len(row)}")
            continue
        plate, state, vin = normalize.plate(row[0]), row[1].strip().upper(), normalize.vin(row[2])
        if not plate or len(plate) > 12:
            result.errors.append(f"line {line}: plate: 1 to 12 letters or digits")
        elif not _STATE.match(state):
            result.errors.append(f"line {line}: state: two letters")
        elif not vin or len(vin) > 25:
            result.errors.append(f"line {line}: vin: 1 to 25 characters")
        else:
            yield {"plate": plate, "state": state, "vin": vin}


def import_file(engine: Engine, path: Path) -> ImportResult:
    """Upsert every good row of ``path`` in one transaction."""
    result = ImportResult()
    insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    batch: dict[tuple[str, str], dict[str, str]] = {}
    with db.transaction(engine) as session:
        conn = session.connection()

        def write() -> None:
            if not batch:
                return
            statement = insert(Registration).values(list(batch.values()))
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["plate", "state"], set_={"vin": statement.excluded.vin}
                )
            )
            batch.clear()

        for row in _rows(path, result):
            batch[(row["plate"], row["state"])] = row  # a later line for the same plate wins
            result.rows += 1
            if len(batch) >= BATCH:
                write()
        write()
        security_log.record(
            session,
            security_log.REGISTRATIONS_IMPORTED,
            detail=f"{result.rows} rows from {path.name}",
            source="cli",
        )
    return result
