"""``olv cards issue``: the cards of a CSV file or of the insurer's policy store, signed,
printed to one PDF and logged.

All or nothing: every row is checked before anything is signed; the PDF is written to a
temporary file beside the output, the log rows are committed, and only then is the file moved
into place. A bad row is reported by its line number and field (never its value).

Cards CSV (header row; dates YYYY-MM-DD or YYYYMMDD; several names separated by ";")::

    insurer_name,naic,policy_number,effective_date,expiration_date,names,year,make,vin,replacement

From the policy store (``--naic``): the store knows policy numbers, VINs and dates, not who is
insured or what the vehicle is, so a vehicles CSV (``vin,names,year,make``) says that; each of
its VINs must have coverage in force today under that NAIC.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, text

from idcards import pdf
from idcards.card import FS75_EXPIRES_DAYS, Card, CardError
from idcards.keys import SigningKey
from idcards.models import IssuedCard
from idcards.signed import sign_card
from olv import db, normalize
from olv.errors import OlvError, UsageError

MAX_CSV_BYTES = 50 * 1024 * 1024
MAX_ROWS = 100_000
CARD_COLUMNS = (
    "insurer_name", "naic", "policy_number", "effective_date", "expiration_date",
    "names", "year", "make", "vin",
)  # fmt: skip
VEHICLE_COLUMNS = ("vin", "names", "year", "make")
_TRUE = {"1", "y", "yes", "true", "x"}


class CardFileError(UsageError):
    """A cards or vehicles CSV that cannot be used; nothing was issued."""


@dataclass(frozen=True)
class Options:
    template: str = "NY"
    fs75: bool = False
    replacement: bool = False
    today: date | None = None

    @property
    def issued(self) -> date:
        return self.today or datetime.now(UTC).date()


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    data = path.read_bytes()[: MAX_CSV_BYTES + 1]
    if len(data) > MAX_CSV_BYTES:
        raise CardFileError(f"{path}: larger than {MAX_CSV_BYTES // 2**20} MB")
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CardFileError(f"{path}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise CardFileError(f"{path}: header lacks {', '.join(missing)}")
    reader.fieldnames = header
    try:
        for number, row in enumerate(reader, start=2):
            if number - 1 > MAX_ROWS:
                raise CardFileError(f"{path}: more than {MAX_ROWS:,} rows")
            if None in row or any(v is None for v in row.values()):
                raise CardFileError(f"{path}: line {number}: wrong number of columns")
            yield number, {k: v.strip() for k, v in row.items()}
    except csv.Error as exc:
        raise CardFileError(f"{path}: not a CSV file ({exc})") from None


def _date(value: str, field: str) -> date:
    try:
        if len(value) == 8 and value.isdigit():
            return date(int(value[:4]), int(value[4:6]), int(value[6:]))
        return date.fromisoformat(value)
    except ValueError:
        raise CardError(f"{field} is not a date (YYYY-MM-DD)") from None


def _year(value: str) -> int:
    if not normalize.is_ascii_digits(value, 4):
        raise CardError("year must be four digits")
    return int(value)


def _names(value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(";") if n.strip())


def _card(issuer: str, fields: dict[str, str], options: Options, row_flag: bool) -> Card:
    issued = options.issued
    effective = _date(fields["effective_date"], "effective_date")
    if options.fs75:  # 32.15(h)(4): an FS-75 expires 60 days after it is prepared
        expires = issued + timedelta(days=FS75_EXPIRES_DAYS)
    else:
        expires = _date(fields["expiration_date"], "expiration_date")
    return Card(
        template=options.template,
        issuer=issuer,
        insurer_name=fields["insurer_name"],
        naic=fields["naic"],
        policy_number=fields["policy_number"],
        effective=effective,
        expires=expires,
        issued=issued,
        names=_names(fields["names"]),
        year=_year(fields["year"]),
        make=fields["make"].upper(),
        vin=normalize.vin(fields["vin"]),
        replacement=options.replacement or row_flag,
        fs75=options.fs75,
    )


def cards_from_csv(path: Path, issuer: str, options: Options) -> list[Card]:
    cards, problems = [], []
    for number, row in _rows(path, CARD_COLUMNS):
        try:
            flag = row.get("replacement", "").lower() in _TRUE
            cards.append(_card(issuer, row, options, flag))
        except CardError as exc:
            problems.append(f"{path}: line {number}: {exc}")
    return _all_or_nothing(path, cards, problems)


def cards_from_store(
    engine: Engine, naic: str, insurer_name: str, vehicles: Path, issuer: str, options: Options
) -> list[Card]:
    if not normalize.is_naic(naic):
        raise UsageError("--naic must be five digits")
    today = options.issued
    query = text(
        "SELECT p.policy_number, c.effective_date, c.expiration_date FROM coverage c "
        "JOIN policy p ON p.id = c.policy_id WHERE c.naic = :naic AND c.vin = :vin "
        "AND c.effective_date <= :today "
        "AND (c.expiration_date IS NULL OR c.expiration_date >= :today) "
        "AND (c.cancel_date IS NULL OR c.cancel_date > :today) "
        "ORDER BY c.effective_date DESC"
    )
    cards, problems = [], []
    with engine.connect() as connection:
        for number, row in _rows(vehicles, VEHICLE_COLUMNS):
            vin = normalize.vin(row["vin"])
            found = connection.execute(query, {"naic": naic, "vin": vin, "today": today}).first()
            if found is None:
                problems.append(
                    f"{vehicles}: line {number}: no coverage in force today under {naic}"
                )
                continue
            policy_number, effective, expires = found
            effective = _as_date(effective)
            expires = _as_date(expires) if expires is not None else None
            fields = {
                **row,
                "insurer_name": insurer_name,
                "naic": naic,
                "policy_number": policy_number,
                "effective_date": effective.isoformat(),
                # A continuous policy with no end date: the card runs one year from today.
                "expiration_date": (expires or today + timedelta(days=365)).isoformat(),
            }
            try:
                cards.append(_card(issuer, fields, options, False))
            except CardError as exc:
                problems.append(f"{vehicles}: line {number}: {exc}")
    return _all_or_nothing(vehicles, cards, problems)


def _as_date(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))  # SQLite hands text back through text()


def _all_or_nothing(path: Path, cards: list[Card], problems: list[str]) -> list[Card]:
    if problems:
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        raise CardFileError("\n".join([*shown, "nothing was issued"]))
    if not cards:
        raise CardFileError(f"{path}: no cards to issue")
    return cards


def issue(engine: Engine, cards: list[Card], key: SigningKey, output: Path) -> int:
    """Sign, print and log ``cards``; returns the number of pages written."""
    if key.issuer != cards[0].issuer:
        raise OlvError("the key belongs to another issuer")
    signed = [(card, sign_card(card, key)) for card in cards]
    fd, temporary = tempfile.mkstemp(prefix=".cards-", suffix=".pdf", dir=output.parent)
    os.close(fd)
    try:
        pages = pdf.write(Path(temporary), signed)
        now = datetime.now(UTC)
        with db.transaction(engine) as session:
            session.add_all(
                IssuedCard(
                    card_id=card.card_id_text,
                    issued_at=now,
                    issuer=card.issuer,
                    key_id=key.key_id_text,
                    template=card.template,
                    fs75=card.fs75,
                )
                for card in cards
            )
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return pages
