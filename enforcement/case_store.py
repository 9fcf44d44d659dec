"""The case engine on the database: reads a registration's record into the pure engine's
terms (:mod:`enforcement.timeline`, :mod:`enforcement.casework`) and writes back what it
decides — activities (only ever added), letters, case rows, MVF answers.

Work is done a batch of registrations at a time inside one database transaction, so a crash
leaves each batch either wholly done or untouched; as the engine decides nothing twice for a
record it has already moved, running the same day again finds nothing left to do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import ColumnElement, bindparam, or_, select, text
from sqlalchemy.orm import Session, load_only, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from enforcement import casework as cw
from enforcement.case_settings import CaseSettings
from enforcement.letters import new_doc_id
from enforcement.models import (
    Activity,
    CoveragePeriod,
    IiesTransaction,
    Letter,
    MvfRequest,
    Registrant,
)
from enforcement.models import Case as CaseRow
from enforcement.timeline import Posting, Span, Timeline, build
from olv.db import among, insert_rows
from portal.models import Registration

TIMELINE_TYPES = ("NBS", "REI", "XLC", "REP", "REC")
POSTED = ("H", "R")
SUSPENSIONS = frozenset({"RSI", "RSV", "RSN"})
INQUIRY_LETTERS = ("LTF", "LTS", "LNI")
_ACTIVITIES = Activity.metadata.tables[Activity.__tablename__]
_ACTIVITY_COLUMNS = tuple(c.name for c in _ACTIVITIES.columns if c.name != "id")
# The activity that closes a case on bounded coverage, by the coverage's source: LOD, the VIN
# in an insurer's book-of-business load; IPA, an insurer confirming it live.
BOUNDED_CODES = {"bob": "LOD", "live": "IPA", "proof": "IPA", "edi": "NBS"}


@dataclass
class Counts:
    """What one run (or one proof) changed."""

    transactions_matched: int = 0
    mvf_answered: int = 0
    cases_opened: int = 0
    cases_closed: int = 0
    letters: int = 0
    suspensions: int = 0
    activities: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class ActivityRow:
    """An activity as the engine writes it: a plain row, not an ORM object (a daily run
    writes tens of thousands, and building an ORM object each costs more than the row)."""

    registration_id: int
    case_id: int | None
    activity_date: date
    code: str
    reason: str | None
    doc_id: str | None
    case_state: str | None
    caused_by: str
    transaction_id: int | None
    recorded_at: datetime

    def values(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _ACTIVITY_COLUMNS}


assert set(ActivityRow.__dataclass_fields__) == set(_ACTIVITY_COLUMNS)


def txn_ref(txn_id: int) -> str:
    return f"txn:{txn_id}"


def _txn_id(ref: str | None) -> int | None:
    if ref and ref.startswith("txn:"):
        return int(ref[4:])
    return None


@dataclass
class Record:
    """One registration's record as read for the engine."""

    registration: Registration
    registrant: Registrant | None
    transactions: list[IiesTransaction] = field(default_factory=list)
    confirmed: list[CoveragePeriod] = field(default_factory=list)
    cases: list[CaseRow] = field(default_factory=list)
    activities: list[Activity | ActivityRow] = field(default_factory=list)
    mvfs: list[MvfRequest] = field(default_factory=list)
    # False while ``registrant`` has not been read (only a letter needs it: see Writer).
    registrant_read: bool = True
    # Set by the run's first pass over a batch: the facts it computed and the case it opened
    # (all of a batch's new cases are written with one flush, not one each).
    known_facts: cw.Facts | None = None
    opening: cw.Step | None = None

    def facts(self) -> cw.Facts:
        postings = [
            Posting(t.type, t.naic, t.effective_date, txn_ref(t.id), t.id)
            for t in self.transactions
            if t.type in TIMELINE_TYPES and t.posted_on is not None and t.effective_date
        ]
        postings += [
            Posting("IPA", c.naic, c.starts, f"cov:{c.id}", 1 << 62)
            for c in self.confirmed
            if not c.rescinded and c.ends is None
        ]
        timeline = build(postings)
        # Coverage known only for a stretch (a book-of-business record, a broadcast answer for
        # one day) is a span of its own: no event will end it, and it must not cover later days.
        bounded = tuple(
            Span(c.naic, c.starts, c.ends, f"cov:{c.id}", BOUNDED_CODES[c.source])
            for c in self.confirmed
            if not c.rescinded and c.ends is not None
        )
        return cw.Facts(
            timeline=Timeline(timeline.spans + bounded, timeline.cancellations),
            nis=tuple(
                (t.naic, txn_ref(t.id), t.posted_on)
                for t in self.transactions
                if t.type == "NIS" and t.posted_on is not None
            ),
            unacceptable=tuple(a.activity_date for a in self.activities if a.code == "IPU"),
            penalty_lapses=tuple(
                c.lapse_starts for c in self.cases if c.civil_penalty_eligible and c.lapse_starts
            ),
        )

    def open_case(self) -> CaseRow | None:
        return next((c for c in self.cases if c.closed_on is None), None)

    def opened_refs(self) -> set[str]:
        return {
            txn_ref(a.transaction_id)
            for a in self.activities
            if a.code == "XLC" and a.case_id is not None and a.transaction_id is not None
        }

    def engine_case(self, row: CaseRow) -> cw.Case:
        # In the order written (ids are not there yet for rows written in this transaction).
        mine = sorted(
            (a for a in self.activities if a.case_id == row.id), key=lambda a: a.activity_date
        )
        opener = next((a for a in mine if a.code == row.open_activity), None)
        letter = next((a for a in reversed(mine) if a.code in INQUIRY_LETTERS), None)
        mvf = max(
            (m for m in self.mvfs if m.case_id == row.id and m.live_status is None),
            key=lambda m: m.id,
            default=None,
        )
        kind = {"XLC": cw.LAPSE, "BOB": cw.BOB}.get(row.open_activity, cw.VERIFICATION)
        return cw.Case(
            kind=kind,
            state=row.case_state,
            opened=row.lapse_starts or row.opened_on,
            open_ref=txn_ref(opener.transaction_id)
            if opener is not None and opener.transaction_id is not None
            else "",
            last_letter=letter.code if letter else None,
            last_letter_day=letter.activity_date if letter else None,
            mvf_day=mvf.sent_on if mvf else None,
            mvf_naic=mvf.naic if mvf else None,
            mvf_tracking=mvf.tracking_number if mvf else None,
        )


def read_registrants(session: Session, records: Iterable[Record]) -> None:
    """Read the registrant of each of these records not read yet (one query for all)."""
    unread = {r.registration.id: r for r in records if not r.registrant_read}
    if not unread:
        return
    for registrant in session.scalars(
        select(Registrant).where(among(session, Registrant.registration_id, list(unread)))
    ):
        unread[registrant.registration_id].registrant = registrant
    for record in unread.values():
        record.registrant_read = True


# What the engine reads of a transaction: a run loads tens of thousands, and an ORM object's
# cost grows with the columns it holds (any other column raises rather than loading one by one).
_ENGINE_TXN_COLUMNS = (
    IiesTransaction.id,
    IiesTransaction.type,
    IiesTransaction.naic,
    IiesTransaction.effective_date,
    IiesTransaction.disposition,
    IiesTransaction.registration_id,
    IiesTransaction.posted_on,
    IiesTransaction.tracking_number,
)


def load_records(
    session: Session, registration_ids: Sequence[int], *, registrants: bool = True
) -> dict[int, Record]:
    """The records of these registrations, a handful of queries for the whole batch. Without
    ``registrants`` they are left unread until a letter needs one (:func:`read_registrants`):
    most records of a daily run get no letter."""
    ids = list(registration_ids)
    records = {
        reg.id: Record(reg, None, registrant_read=False)
        for reg in session.scalars(select(Registration).where(among(session, Registration.id, ids)))
    }
    if registrants:
        read_registrants(session, records.values())
    for txn in session.scalars(
        select(IiesTransaction)
        .options(load_only(*_ENGINE_TXN_COLUMNS, raiseload=True))
        .where(
            among(session, IiesTransaction.registration_id, ids),
            IiesTransaction.disposition.in_(POSTED),
        )
        .order_by(IiesTransaction.id)
    ):
        assert txn.registration_id is not None  # IN never matches NULL
        records[txn.registration_id].transactions.append(txn)
    for period in session.scalars(
        select(CoveragePeriod).where(
            among(session, CoveragePeriod.registration_id, ids),
            CoveragePeriod.source.in_(("live", "proof", "bob")),
        )
    ):
        records[period.registration_id].confirmed.append(period)
    for case in session.scalars(
        select(CaseRow).where(among(session, CaseRow.registration_id, ids)).order_by(CaseRow.id)
    ):
        records[case.registration_id].cases.append(case)
    for activity in session.scalars(
        select(Activity).where(among(session, Activity.registration_id, ids)).order_by(Activity.id)
    ):
        records[activity.registration_id].activities.append(activity)
    for mvf in session.scalars(
        select(MvfRequest).where(among(session, MvfRequest.registration_id, ids))
    ):
        records[mvf.registration_id].mvfs.append(mvf)
    return records


class Writer:
    """Writes the engine's steps for one record (activities, letters, the case row)."""

    def __init__(
        self,
        session: Session,
        settings: CaseSettings,
        caused_by: str,
        *,
        defer_activities: bool = False,
    ) -> None:
        self.session = session
        self.settings = settings
        self.caused_by = caused_by
        self.now = datetime.now(UTC)
        self._free_ids: list[str] = []
        self._reserve = 0
        # Deferred (the daily run): activities are kept as rows and written together by
        # write_activities(), one COPY or executemany for a batch instead of ORM objects.
        self.defer_activities = defer_activities
        self._activities: list[dict[str, object]] = []
        self._cases: list[CaseRow] = []
        # The batch's records: the first letter reads the registrants of all those not read.
        self.batch: Iterable[Record] = ()

    def reserve_doc_ids(self, count: int) -> None:
        """Draw ``count`` Document IDs not yet used, with one query (not one per letter), when
        the first letter needs one: most batches of a day write no letter at all."""
        self._reserve = count

    def _draw(self) -> None:
        drawn = {new_doc_id() for _ in range(self._reserve)}
        self._reserve = 0
        query = select(Letter.doc_id).where(among(self.session, Letter.doc_id, drawn))
        taken = set(self.session.scalars(query))
        self._free_ids = sorted(drawn - taken)

    def add_activity(self, activity: ActivityRow) -> None:
        """Record one activity (now, or with the batch when deferred)."""
        if not self.defer_activities:
            self.session.add(Activity(**activity.values()))
            return
        self._activities.append(activity.values())

    def write_activities(self) -> None:
        """Write the deferred activities (after the batch's cases have their ids)."""
        rows, self._activities = self._activities, []
        insert_rows(self.session.connection(), _ACTIVITIES, rows)

    def _doc_id(self) -> str:
        if self._reserve:
            self._draw()
        if self._free_ids:
            return self._free_ids.pop()
        doc_id = new_doc_id()
        while self.session.get(Letter, doc_id) is not None:  # 1 in 10^9: draw again
            doc_id = new_doc_id()
        return doc_id

    def open(
        self, record: Record, step: cw.Step, kind_code: str, naic: str | None, flush: bool = True
    ) -> CaseRow:
        reg = record.registration
        row = CaseRow(
            registration_id=reg.id,
            vin=reg.vin,
            plate=reg.plate,
            state=reg.state,
            case_state=step.state,
            opened_on=step.day,
            open_activity=kind_code,
            naic=naic,
            lapse_starts=step.day if kind_code == "XLC" else None,
        )
        if flush:
            self.session.add(row)
            self.session.flush()
        else:  # written with the others by write_cases()
            self._cases.append(row)
        record.cases.append(row)
        return row

    def write_cases(self) -> None:
        """Write the cases opened with ``flush=False``; they have their ids after this."""
        rows, self._cases = self._cases, []
        insert_cases(self.session, rows)

    def steps(
        self,
        record: Record,
        row: CaseRow | None,
        steps: Iterable[cw.Step],
        counts: Counts,
        recorded: set[int],
    ) -> None:
        for step in steps:
            doc_id = self._letter(record, row, step) if step.letter else None
            txn = _txn_id(step.ref)
            activity = ActivityRow(
                registration_id=record.registration.id,
                case_id=row.id if row is not None else None,
                activity_date=step.day,
                code=step.code,
                reason=step.reason,
                doc_id=doc_id,
                case_state=step.state if row is not None else None,
                caused_by=(txn_ref(txn) if txn is not None else self.caused_by)[:60],
                transaction_id=txn,
                recorded_at=self.now,
            )
            self.add_activity(activity)
            record.activities.append(activity)
            if txn is not None:
                recorded.add(txn)
            counts.activities += 1
            counts.letters += doc_id is not None
            counts.suspensions += step.code in SUSPENSIONS
            if row is not None:
                self._move(row, step, counts)

    def _move(self, row: CaseRow, step: cw.Step, counts: Counts) -> None:
        row.case_state = step.state
        if step.state in cw.CLOSED_STATES and row.closed_on is None:
            row.closed_on = step.day
            row.close_activity = step.code
            row.reason = step.reason if step.reason and step.reason[0] in "AR" else None
            lapse = step.detail.get("lapse_days")
            row.lapse_days = int(lapse) if isinstance(lapse, int) else None
            eligible = step.detail.get("penalty_eligible")
            row.civil_penalty_eligible = bool(eligible) if eligible is not None else None
            row.next_due = None
            counts.cases_closed += 1

    def _letter(self, record: Record, row: CaseRow | None, step: cw.Step) -> str:
        if not record.registrant_read:
            read_registrants(self.session, [record, *self.batch])
        reg, person = record.registration, record.registrant
        doc_id = self._doc_id()
        self.session.add(
            Letter(
                doc_id=doc_id,
                type=step.code,
                case_id=row.id if row is not None else None,
                registration_id=reg.id,
                letter_date=step.day,
                respond_by=cw.respond_by(step.code, step.day, self.settings),
                addressee=addressee(person)[:200],
                address1=person.address1 if person else None,
                address2=person.address2 if person else None,
                city=person.city if person else None,
                zip=person.zip if person else None,
                vin=reg.vin,
                plate=reg.plate,
                state=reg.state,
                created_at=self.now,
            )
        )
        return doc_id


def addressee(person: Registrant | None) -> str:
    """The registrant's name as a letter prints it ("REGISTRANT" when none is on file)."""
    if person is None or not (person.last_name or "").strip():
        return "REGISTRANT"
    if person.entity_type == 2:
        return person.last_name or ""
    parts = (person.first_name, person.middle_name, person.last_name)
    return " ".join(p.strip() for p in parts if p and p.strip())


def move_record(
    session: Session,
    record: Record,
    day: date,
    settings: CaseSettings,
    caused_by: str,
    new_postings: Sequence[IiesTransaction] = (),
    writer: Writer | None = None,
) -> Counts:
    """Bring one record's cases up to ``day``; ``new_postings`` are the transactions this call
    put in the timeline (their activities are written here, as steps or plain)."""
    counts = Counts()
    writer = writer or Writer(session, settings, caused_by)
    recorded: set[int] = set()
    facts = record.known_facts or record.facts()
    for _ in range(100):  # each round opens or moves a case; a record never needs this many
        row = record.open_case()
        if row is not None and record.opening is not None:  # opened by the batch's first pass
            writer.steps(record, row, [record.opening], counts, recorded)
            record.opening = None
            counts.cases_opened += 1
        elif row is None:
            row = open_lapse(writer, record, facts, day, flush=True)
            if row is None:
                break
            assert record.opening is not None  # open_lapse left the opening step there
            writer.steps(record, row, [record.opening], counts, recorded)
            record.opening = None
            counts.cases_opened += 1
        case = record.engine_case(row)
        case, steps = cw.advance(case, facts, day, settings)
        writer.steps(record, row, steps, counts, recorded)
        row.next_due = cw.next_due(case, settings) if row.closed_on is None else None
        if row.closed_on is None:
            break
    open_row = record.open_case()
    for txn in new_postings:
        if txn.id in recorded:
            continue
        writer.add_activity(
            ActivityRow(
                registration_id=record.registration.id,
                case_id=open_row.id if open_row is not None else None,
                activity_date=txn.effective_date or day,
                code=txn.type,
                reason=None,
                doc_id=None,
                case_state=None,
                caused_by=txn_ref(txn.id),
                transaction_id=txn.id,
                recorded_at=writer.now,
            )
        )
        counts.activities += 1
    return counts


def open_lapse(
    writer: Writer, record: Record, facts: cw.Facts, day: date, *, flush: bool
) -> CaseRow | None:
    """Open the lapse case a cancellation calls for, if any (its opening step waits in
    ``record.opening`` to be written with the case's other steps)."""
    step = cw.opening(facts.timeline, record.opened_refs(), day)
    if step is None:
        return None
    txn = _txn_id(step.ref)
    naic = next((t.naic for t in record.transactions if t.id == txn), None)
    record.opening = step
    return writer.open(record, step, "XLC", naic, flush=flush)


def answer_mvfs(
    session: Session, record: Record, day: date, posted: Sequence[IiesTransaction]
) -> int:
    """NBS/REI/NIS carrying an MVF's tracking number answer it (first answer wins)."""
    answered = 0
    by_tracking = {m.tracking_number: m for m in record.mvfs if m.answer is None}
    for txn in posted:
        mvf = by_tracking.get(txn.tracking_number or "")
        if mvf is None or txn.type not in ("NBS", "REI", "NIS") or txn.naic != mvf.naic:
            continue
        mvf.answer = "NIS" if txn.type == "NIS" else "NBS"
        mvf.answered_by = txn.id
        mvf.answered_on = day
        del by_tracking[mvf.tracking_number]
        answered += 1
    return answered


def due_filter(day: date) -> tuple[ColumnElement[bool], ...]:
    """Transactions the run puts in the timeline on ``day``: matched, not yet posted, and
    (cancellations) in effect — a future cancellation waits for its date."""
    return (
        IiesTransaction.disposition.in_(POSTED),
        IiesTransaction.registration_id.is_not(None),
        IiesTransaction.posted_on.is_(None),
        or_(IiesTransaction.type != "XLC", IiesTransaction.effective_date <= day),
    )


_CASE_COLUMNS = (
    "registration_id",
    "vin",
    "plate",
    "state",
    "case_state",
    "opened_on",
    "open_activity",
    "naic",
    "lapse_starts",
)
_CASE_TYPES = {"registration_id": "integer", "opened_on": "date", "lapse_starts": "date"}


def insert_cases(session: Session, rows: Sequence[CaseRow]) -> None:
    """Write new case rows, at most one per registration, and give them their ids.

    On PostgreSQL one ``INSERT … SELECT unnest(arrays) … RETURNING`` of fixed text: the ORM's
    multi-row INSERT has a different text for each number of rows, which the driver parses
    anew every time. The rows then join the session as if loaded (later changes are tracked
    as usual). Elsewhere, or with two new cases for one registration, the ORM writes them."""
    pending = list(rows)
    by_registration = {row.registration_id: row for row in pending}
    if session.get_bind().dialect.name != "postgresql" or len(by_registration) < len(pending):
        session.add_all(pending)
        session.flush()
        return
    if not pending:
        return
    columns = ", ".join(_CASE_COLUMNS)
    arrays = ", ".join(f"CAST(:{n} AS {_CASE_TYPES.get(n, 'text')}[])" for n in _CASE_COLUMNS)
    inserted = session.connection().execute(
        text(
            f"INSERT INTO cases ({columns}) SELECT * FROM unnest({arrays}) "
            "RETURNING id, registration_id"
        ),
        {n: [getattr(row, n) for row in pending] for n in _CASE_COLUMNS},
    )
    for case_id, registration_id in inserted:
        row = by_registration.pop(registration_id)
        row.id = case_id
        for name in _CASE_CHANGES:  # columns a new case leaves empty, known without a query
            setattr(row, name, getattr(row, name))
        make_transient_to_detached(row)
        session.add(row)
    assert not by_registration, "every new case was written"


_CASE_CHANGES = (
    "case_state",
    "next_due",
    "closed_on",
    "close_activity",
    "reason",
    "lapse_days",
    "civil_penalty_eligible",
)


def write_case_changes(session: Session) -> None:
    """Write the batch's changed case rows with one statement (PostgreSQL: an UPDATE joined to
    the new values as arrays; SQLite: one executemany) instead of the ORM's UPDATE per row."""
    changed = [
        c
        for c in session.dirty
        if isinstance(c, CaseRow) and c.id is not None and session.is_modified(c)
    ]
    if not changed:
        return
    rows = [{"id": c.id, **{name: getattr(c, name) for name in _CASE_CHANGES}} for c in changed]
    table = CaseRow.metadata.tables[CaseRow.__tablename__]
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        types = {"id": "bigint", "next_due": "date", "closed_on": "date", "lapse_days": "integer",
                 "civil_penalty_eligible": "boolean"}  # fmt: skip
        names = ["id", *_CASE_CHANGES]
        columns = ", ".join(f"unnest(CAST(:{n} AS {types.get(n, 'text')}[])) AS {n}" for n in names)
        sets = ", ".join(f"{n} = v.{n}" for n in _CASE_CHANGES)
        connection.execute(
            text(f"UPDATE cases SET {sets} FROM (SELECT {columns}) v WHERE cases.id = v.id"),
            {n: [r[n] for r in rows] for n in names},
        )
    else:
        connection.execute(
            table.update().where(table.c.id == bindparam("case_id")),
            [{"case_id": r.pop("id"), **r} for r in rows],
        )
    for case in changed:  # now stored: nothing left for the ORM to write
        for name in _CASE_CHANGES:
            set_committed_value(case, name, getattr(case, name))


def is_due(txn: IiesTransaction, day: date) -> bool:
    """:func:`due_filter` for a transaction already in memory."""
    return (
        txn.disposition in POSTED
        and txn.registration_id is not None
        and txn.posted_on is None
        and (txn.type != "XLC" or (txn.effective_date is not None and txn.effective_date <= day))
    )


def group_by_registration(
    txns: Iterable[IiesTransaction],
) -> dict[int, list[IiesTransaction]]:
    grouped: dict[int, list[IiesTransaction]] = defaultdict(list)
    for txn in txns:
        if txn.registration_id is not None:
            grouped[txn.registration_id].append(txn)
    return grouped
