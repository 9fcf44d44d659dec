"""Receiving insurer transactions (SPEC §6), the one path behind all three channels: the SFTP
intake, ``olv iies load`` and ``POST /api/v1/iies/transactions``.

A file (or call) is edited, matched and stored in ONE database transaction, so it is either
accepted whole — every row stored with its disposition H, R, E or U — or rejected whole with a
file-level code (:data:`enforcement.codes.FILE_ERRORS`) and nothing but the acknowledgement
kept. The same bytes delivered again by the same insurer get the first acknowledgement back.

Memory stays bounded whatever the size: rows are read line by line (a line over the limit
rejects the file) and handled in batches; only the txn_ids seen so far are kept, to refuse a
duplicate.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, TypedDict

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from bob_loader.files import NOT_REGULAR, NotARegularFile, open_regular, sha256_of
from bob_loader.intake_claims import safe_name
from enforcement import matching
from enforcement.edits import HEADER, Txn, edit
from enforcement.models import IiesFile, IiesTransaction, Registrant
from enforcement.sequence import History
from enforcement.settings import get_iies_settings
from olv import db, normalize
from portal.models import Registration

CHANNELS = ("sftp", "cli", "api")
_SNIFF = 4096
LOCK_BASE = 0x11E5_0000  # PostgreSQL advisory lock space of the intake, one key per NAIC


class FileRejected(Exception):
    """The whole file or call is refused; ``code`` is one of ``codes.FILE_ERRORS``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _DeliveredMeanwhile(Exception):
    """The same bytes were accepted by a load that committed while this one waited for its
    turn: this one's transaction is rolled back and that load's acknowledgement is the answer."""

    def __init__(self, ack: Ack) -> None:
        super().__init__(ack.ack_id)
        self.ack = ack


class AckFields(TypedDict):
    """An acknowledgement as JSON carries it (the CLI line, the outbox file, the API body)."""

    ack_id: int
    file: str
    naic: str | None
    channel: str
    status: str
    rows: int
    counts: dict[str, int]
    error_code: str | None
    error: str | None
    received_at: str | None


@dataclass
class Ack:
    """The acknowledgement of one file or call."""

    ack_id: int
    file: str
    naic: str | None
    channel: str
    status: str
    rows: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys("HREU", 0))
    error_code: str | None = None
    error: str | None = None
    received_at: datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    def as_dict(self) -> AckFields:
        return {
            "ack_id": self.ack_id,
            "file": self.file,
            "naic": self.naic,
            "channel": self.channel,
            "status": self.status,
            "rows": self.rows,
            "counts": self.counts,
            "error_code": self.error_code,
            "error": self.error,
            "received_at": self.received_at.isoformat() if self.received_at else None,
        }

    @classmethod
    def of(cls, row: IiesFile) -> Ack:
        return cls(
            ack_id=row.id,
            file=row.name,
            naic=row.naic,
            channel=row.channel,
            status=row.status,
            rows=row.rows,
            counts={"H": row.matched, "R": row.resolved, "E": row.edit_errors, "U": row.unresolved},
            error_code=row.error_code,
            error=row.error,
            received_at=db.as_utc(row.received_at),
        )


def _open(source: Path | bytes, channel: str) -> BinaryIO:
    """The file's bytes. Only an operator's command line may name a file through a link; a
    dropped file that is not a regular one is refused unread (a link could reach any file the
    intake may read, a FIFO or device would hang it)."""
    if isinstance(source, bytes):
        return io.BytesIO(source)
    return open_regular(source, follow_links=channel == "cli")


def _not_regular(exc: NotARegularFile) -> FileRejected:
    return FileRejected("F01", exc.strerror or NOT_REGULAR)


def _unreadable(exc: OSError) -> FileRejected:
    # The reason alone: the exception's text would carry the intake's path.
    return FileRejected("F01", f"cannot read the file: {exc.strerror or type(exc).__name__}")


def _lines(stream: BinaryIO, limit: int) -> Iterator[str]:
    """Decoded lines, each at most ``limit`` bytes; anything not UTF-8 text rejects the file."""
    head = stream.read(_SNIFF)
    if b"\x00" in head or head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileRejected("F01", "not a UTF-8 text file (binary content)")
    stream = io.BufferedReader(_Prefixed(head, stream))
    first = True
    while True:
        raw = stream.readline(limit + 2)
        if not raw:
            return
        if len(raw.rstrip(b"\r\n")) > limit:
            raise FileRejected("F03", f"a line is longer than {limit} bytes")
        if b"\x00" in raw:
            raise FileRejected("F01", "not a UTF-8 text file (binary content)")
        try:
            line = raw.decode("utf-8-sig" if first else "utf-8")
        except UnicodeDecodeError:
            raise FileRejected("F01", "not a UTF-8 text file") from None
        first = False
        yield line


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read for sniffing."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _rows(stream: BinaryIO, limit: int) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(_lines(stream, limit))
    try:
        header = next(reader, None)
        if header is None:
            raise FileRejected("F05", "the file is empty")
        if tuple(h.strip().lower() for h in header) != HEADER:
            raise FileRejected("F02", f"the first line must be {','.join(HEADER)}")
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(HEADER):
                raise FileRejected(
                    "F04",
                    f"line {reader.line_num}: expected {len(HEADER)} fields, found {len(row)}",
                )
            yield reader.line_num, dict(zip(HEADER, row, strict=True))
    except csv.Error as exc:
        raise FileRejected("F04", f"line {reader.line_num}: not CSV ({exc})") from None


@dataclass
class _Run:
    """What one load carries across batches."""

    naic: str
    file_id: int
    today: date
    now: datetime
    rematch_days: int
    seen: set[str] = field(default_factory=set)
    histories: dict[int, History] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys("HREU", 0))
    rows: int = 0


def load(
    engine: Engine,
    source: Path | bytes,
    *,
    name: str,
    channel: str,
    sender_naic: str | None = None,
    max_rows: int | None = None,
    now: datetime | None = None,
    seconds: float | None = None,
) -> Ack:
    """Receive one file or call; returns its acknowledgement (accepted or rejected whole).
    ``seconds``: how long its transaction may take, waits for locks included (an API call's
    budget; None: as long as it takes); past it ``OperationalError``, and nothing is kept."""
    name = safe_name(name)  # the name need not be text (a byte 0xFF): store a displayable one
    settings = get_iies_settings()
    now = now or datetime.now(UTC)
    limit = max_rows or settings.max_rows
    try:
        stream = _open(source, channel)
    except NotARegularFile as exc:
        return _reject(engine, name, channel, sender_naic, None, now, _not_regular(exc))
    except OSError as exc:
        # A file the intake may not read (an upload left mode 0600 by the insurer's client)
        # will not become readable by waiting: refused with an acknowledgement, as the BoB
        # loader does, rather than retried at every poll with the account's later files
        # held behind it.
        return _reject(engine, name, channel, sender_naic, None, now, _unreadable(exc))
    with stream:
        try:
            digest = sha256_of(stream)
        except OSError as exc:
            return _reject(engine, name, channel, sender_naic, None, now, _unreadable(exc))
        return _load_stream(engine, stream, digest, name, channel, sender_naic, limit, now, seconds)


def _load_stream(
    engine: Engine,
    stream: BinaryIO,
    digest: str,
    name: str,
    channel: str,
    sender_naic: str | None,
    limit: int,
    now: datetime,
    seconds: float | None = None,
) -> Ack:
    settings = get_iies_settings()
    if sender_naic is not None:
        earlier = _earlier_delivery(engine, sender_naic, digest)
        if earlier is not None:
            return earlier
    naic = sender_naic
    try:
        with (
            db.transaction(engine) as session,
            db.all_waits_limited(session.connection(), seconds) as tighten,
        ):
            rows = _rows(stream, settings.max_line_bytes)
            first = next(rows, None)
            if first is None:
                raise FileRejected("F05", "the file holds no transactions")
            if naic is None:
                naic = first[1]["naic"].strip()
                if not normalize.is_naic(naic):
                    raise FileRejected(
                        "F09", f"line {first[0]}: no sender NAIC (give --naic or a valid naic)"
                    )
                earlier = _earlier_delivery(engine, naic, digest)
                if earlier is not None:
                    return earlier
            if engine.dialect.name == "postgresql":
                lock = {"k": LOCK_BASE + int(naic)}
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), lock)
            file_row = IiesFile(
                naic=naic,
                channel=channel,
                name=name[:255],
                sha256=digest,
                received_at=now,
                status="accepted",
                rows=0,
                matched=0,
                resolved=0,
                edit_errors=0,
                unresolved=0,
            )
            session.add(file_row)
            session.flush()
            # Past the write lock (SQLite) or the NAIC's lock (PostgreSQL): a load of the same
            # bytes that began before ours has committed by now, and its acknowledgement is
            # ours too (its txn_ids would otherwise refuse this copy as replayed, F08).
            meanwhile = _accepted(session, naic, digest, before=file_row.id)
            if meanwhile is not None:
                raise _DeliveredMeanwhile(Ack.of(meanwhile))
            run = _Run(naic, file_row.id, now.date(), now, settings.rematch_days)
            batch: list[Txn] = []
            for line, row in _chain(first, rows):
                run.rows += 1
                if run.rows > limit:
                    raise FileRejected("F06", f"more than {limit} transactions in one file")
                txn = edit(row, line, naic, run.today)
                if txn.txn_id in run.seen:
                    raise FileRejected("F07", f"line {line}: txn_id {txn.txn_id} appears twice")
                run.seen.add(txn.txn_id)
                batch.append(txn)
                if len(batch) >= settings.batch_size:
                    tighten()  # each batch may take only what the earlier ones left
                    _process(session, run, batch)
                    batch = []
            tighten()
            _process(session, run, batch)
            file_row.rows = run.rows
            file_row.matched, file_row.resolved = run.counts["H"], run.counts["R"]
            file_row.edit_errors, file_row.unresolved = run.counts["E"], run.counts["U"]
            session.flush()
            return Ack.of(file_row)
    except FileRejected as refused:
        return _reject(engine, name, channel, naic, digest, now, refused)
    except _DeliveredMeanwhile as delivered:
        return delivered.ack


def reject(
    engine: Engine,
    source: Path | bytes,
    name: str,
    channel: str,
    naic: str | None,
    refused: FileRejected,
) -> Ack:
    """Refuse a file or call before reading it (a bad file name, an unbound NAIC)."""
    name = safe_name(name)
    try:
        with _open(source, channel) as stream:
            digest: str | None = sha256_of(stream)
    except OSError:
        # Not a regular file, or one the intake may not read: refused anyway, and for this
        # reason; nothing of it is read, not even for a checksum.
        digest = None
    return _reject(engine, name, channel, naic, digest, datetime.now(UTC), refused)


def _chain(
    first: tuple[int, dict[str, str]], rest: Iterator[tuple[int, dict[str, str]]]
) -> Iterator[tuple[int, dict[str, str]]]:
    yield first
    yield from rest


def _earlier_delivery(engine: Engine, naic: str, digest: str) -> Ack | None:
    with db.transaction(engine) as session:
        row = _accepted(session, naic, digest)
        return Ack.of(row) if row is not None else None


def _accepted(
    session: Session, naic: str, digest: str, before: int | None = None
) -> IiesFile | None:
    """The first accepted delivery of these bytes from ``naic`` (other than row ``before``
    and those after it)."""
    query = select(IiesFile).where(
        IiesFile.naic == naic, IiesFile.sha256 == digest, IiesFile.status == "accepted"
    )
    if before is not None:
        query = query.where(IiesFile.id < before)
    return session.scalars(query.order_by(IiesFile.id).limit(1)).first()


def _reject(
    engine: Engine,
    name: str,
    channel: str,
    naic: str | None,
    digest: str | None,
    now: datetime,
    refused: FileRejected,
) -> Ack:
    with db.transaction(engine) as session:
        row = IiesFile(
            naic=naic,
            channel=channel,
            name=name[:255],
            sha256=digest,
            received_at=now,
            status="rejected",
            error_code=refused.code,
            error=refused.message[:500],
            rows=0,
            matched=0,
            resolved=0,
            edit_errors=0,
            unresolved=0,
        )
        session.add(row)
        session.flush()
        return Ack.of(row)


# --- matching a batch ---------------------------------------------------------------------------


def sent_of(txn: Txn | IiesTransaction) -> matching.Sent:
    return matching.Sent(
        vin=txn.vin or "",
        plate=txn.plate,
        entity_type=2 if txn.entity_type == "2" else 1,
        last_name=txn.last_name,
        first_name=txn.first_name,
        middle_name=txn.middle_name,
        dob=txn.dob,
        dl_number=txn.dl_number,
        fein=txn.fein,
        zip=txn.zip,
    )


_CANDIDATE_COLUMNS = (
    Registration.id,
    Registration.plate,
    Registration.state,
    Registration.vin,
    Registrant.entity_type,
    Registrant.last_name,
    Registrant.first_name,
    Registrant.middle_name,
    Registrant.dob,
    Registrant.dl_number,
    Registrant.fein,
    Registrant.zip,
    Registrant.status,
    Registrant.reg_effective,
)


def _candidates(session: Session, vins: set[str]) -> dict[str, list[matching.Candidate]]:
    found: dict[str, list[matching.Candidate]] = {}
    if not vins:
        return found
    query = (
        select(*_CANDIDATE_COLUMNS)
        .outerjoin(Registrant, Registrant.registration_id == Registration.id)
        .where(db.among(session, Registration.vin, vins))
    )
    for row in session.execute(query):
        found.setdefault(row.vin, []).append(matching.Candidate(*row))
    return found


def _keyed(session: Session, keys: set[str]) -> dict[str, list[matching.Candidate]]:
    found: dict[str, list[matching.Candidate]] = {}
    if not keys:
        return found
    query = (
        select(Registrant.resolve_key, *_CANDIDATE_COLUMNS)
        .join(Registration, Registrant.registration_id == Registration.id)
        .where(db.among(session, Registrant.resolve_key, keys))
    )
    for key, *rest in session.execute(query):
        assert key is not None  # IN never matches NULL
        found.setdefault(key, []).append(matching.Candidate(*rest))
    return found


def match_all(
    session: Session, sent: list[matching.Sent]
) -> list[tuple[str, matching.Candidate] | None]:
    """For each sent record: (H1-H4 or R, the registration) or None. Two queries a batch."""
    by_vin = _candidates(session, {s.vin for s in sent if s.vin})
    results: list[tuple[str, matching.Candidate] | None] = [
        matching.direct_hit(s, by_vin.get(s.vin, ())) for s in sent
    ]
    keys = {
        k for s, r in zip(sent, results, strict=True) if r is None and (k := matching.sent_key(s))
    }
    keyed = _keyed(session, keys)
    for index, (s, r) in enumerate(zip(sent, results, strict=True)):
        if r is None and (key := matching.sent_key(s)) in keyed:
            hit = matching.resolve(s, keyed[key])
            if hit is not None:
                results[index] = ("R", hit)
    return results


def _histories(session: Session, run: _Run, registration_ids: set[int]) -> None:
    missing = registration_ids - run.histories.keys()
    if not missing:
        return
    for rid in missing:
        run.histories[rid] = History()
    # The insurer is compared here, not in SQL: with a condition on ``naic`` the planner may
    # prefer the (naic, disposed_at) index, which names every row of the insurer, and test
    # each against the whole batch of ids. Statistics taken while the table was small (a
    # first load grows it within one transaction) make it do so, and each batch then costs
    # as much as the insurer's every row. Without it only the registration index serves.
    query = (
        select(
            IiesTransaction.registration_id,
            IiesTransaction.naic,
            IiesTransaction.type,
            IiesTransaction.effective_date,
        )
        .where(
            db.among(session, IiesTransaction.registration_id, missing),
            IiesTransaction.disposition.in_(("H", "R")),
            IiesTransaction.type.in_(("NBS", "REI", "XLC", "REP", "REC")),
        )
        .order_by(IiesTransaction.id)
    )
    for registration_id, naic, kind, effective in session.execute(query):
        if naic != run.naic:
            continue
        assert registration_id is not None  # IN never matches NULL
        assert effective is not None  # required, edited: only refused filings lack one
        run.histories[registration_id].apply(kind, effective)


_SEQUENCED = ("NBS", "REI", "XLC", "REP", "REC")
# The Table itself (``__table__`` is typed as any FromClause, which Core ``insert`` refuses)
_TRANSACTIONS = IiesTransaction.metadata.tables[IiesTransaction.__tablename__]


def _process(session: Session, run: _Run, batch: list[Txn]) -> None:
    if not batch:
        return
    ids = [t.txn_id for t in batch]
    already = session.scalars(
        select(IiesTransaction.txn_id)
        .where(IiesTransaction.naic == run.naic, db.among(session, IiesTransaction.txn_id, ids))
        .limit(1)
    ).first()
    if already is not None:
        raise FileRejected("F08", f"txn_id {already} was already received from NAIC {run.naic}")
    clean = [t for t in batch if not t.codes]
    matched = match_all(session, [sent_of(t) for t in clean])
    results = dict(zip((id(t) for t in clean), matched, strict=True))
    _histories(
        session,
        run,
        {r[1].id for t in clean if t.type in _SEQUENCED and (r := results[id(t)]) is not None},
    )
    rows = []
    for txn in batch:
        result = results.get(id(txn))
        registration_id = result[1].id if result else None
        rule = result[0] if result else None
        if not txn.codes and txn.type in ("REP", "REC") and result is None:
            txn.codes = ["E62" if txn.type == "REP" else "E63"]
        elif not txn.codes and result is not None and txn.type in _SEQUENCED:
            assert txn.effective_date is not None  # required, edited
            refused = run.histories[result[1].id].apply(txn.type, txn.effective_date)
            if refused:
                txn.codes = [refused]
        rematch_until = None
        if txn.codes:
            disposition = "E"
        elif result is None:
            disposition = "U"
            if txn.type == "NBS" and run.rematch_days:
                rematch_until = run.today + timedelta(days=run.rematch_days)
        else:
            disposition = "R" if rule == "R" else "H"
        run.counts[disposition] += 1
        rows.append(
            {
                "file_id": run.file_id,
                "txn_id": txn.txn_id,
                "type": txn.type,
                "naic": run.naic,
                "effective_date": txn.effective_date,
                "policy_number": txn.policy_number,
                "policy_type": txn.policy_type,
                "entity_type": txn.entity_type,
                "last_name": txn.last_name,
                "first_name": txn.first_name,
                "middle_name": txn.middle_name,
                "dob": txn.dob,
                "dl_number": txn.dl_number,
                "fein": txn.fein,
                "zip": txn.zip,
                "vin": txn.vin,
                "plate": txn.plate,
                "vehicle_year": txn.vehicle_year,
                "make": txn.make,
                "tracking_number": txn.tracking_number,
                "received_at": run.now,
                "disposition": disposition,
                "match_rule": rule,
                "codes": ",".join(txn.codes),
                "registration_id": registration_id,
                "disposed_at": run.now,
                "rematch_until": rematch_until,
            }
        )
    # COPY (PostgreSQL) or executemany: no statement, parameters or ORM object per row
    db.insert_rows(session.connection(), _TRANSACTIONS, rows)
