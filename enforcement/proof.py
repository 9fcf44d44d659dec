"""Paper proof of insurance posted at registration (``olv iies proof``, the DMV page): the
mandatory verification, asked live where the insurer runs a registered OLV service.

* Confirmed: the proof posts as coverage from its date (an open case closes).
* Unconfirmed: the insurer says it does not insure the vehicle, which counts as its NIS
  answer (suspension).
* The insurer has no registered service, or it cannot answer now: an MVF with a tracking
  number goes to the insurer's outbox; its NBS/NIS answer, or silence, moves the case.

The proof's changes are made under the daily run's lock (:func:`enforcement.run.exclusive`):
a run that has read a registration and a proof moving its case meanwhile would each decide from
what the other had not written yet (two cases, two letters). A proof posted while a run works
waits for it (at most :data:`PROOF_WAIT_SECONDS`), then posts; past the wait it stops with
:class:`ProofBusy` (exit 1), having changed nothing. The insurer is asked before the wait, not
under the lock: the run does not wait for an insurer's answer.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from enforcement import casework as cw
from enforcement.case_settings import CaseSettings
from enforcement.case_store import Counts, Writer, load_records, move_record
from enforcement.models import Activity, CoveragePeriod, MvfRequest
from enforcement.run import batch_turn, exclusive
from olv import db, normalize
from olv.db import transaction
from olv.errors import OlvError, UsageError
from portal.insurer_client import CallResult, InsurerClient
from portal.models import Insurer, Registration
from portal.registry import InsurerInput
from portal.settings import PortalSettings
from portal.soap_wire import Ask
from portal.verdicts import judged, usable

REQUEST_REASON = "VEHREG"  # verification for a vehicle registration (00200809 reason)
LIVE_CONFIRMED, LIVE_UNCONFIRMED = "Confirmed", "Unconfirmed"
# How long a proof waits for a run working on the database; someone at the DMV counter waits
# for the answer, so not the hours a large state's run may take (they are told to post again
# once it has finished). The default serves the portal's Paper proof page, which must answer
# within nginx's proxy_read_timeout (15 s) after the insurer's budget (5 s): past that the
# clerk would see a gateway error for a proof that then posts anyway. The command has no proxy
# in front: it waits longer (case_cli).
PROOF_WAIT_SECONDS = 5.0
COMMAND_WAIT_SECONDS = 120.0


class ProofBusy(OlvError):
    """A run kept the database past the proof's wait (exit 1); the proof changed nothing."""


def _proof_busy(reason: str) -> OlvError:
    return ProofBusy(
        f"{reason}; the proof was not posted (nothing changed): post it again once the run "
        "has finished"
    )


SLOW_DATABASE = (
    "the state database did not answer in time (a lock held elsewhere); the proof was not "
    "posted (nothing changed): post it again in a moment"
)


class NoRegistration(OlvError):
    """No registration has this plate in this state (exit 1)."""


@dataclass(frozen=True)
class ProofInput:
    plate: str
    state: str
    naic: str
    policy: str
    day: date


def check(raw: ProofInput) -> ProofInput:
    """Normalized, or :class:`UsageError` naming the field."""
    plate = normalize.plate(raw.plate)
    state = raw.state.strip().upper()
    policy = normalize.policy_key(raw.policy)
    if not plate or len(plate) > 12 or not normalize.is_field_text(plate):
        raise UsageError("--plate: 1 to 12 letters and digits")
    if len(state) != 2 or not state.isascii() or not state.isalpha():
        raise UsageError("--state: a two-letter state code")
    if not normalize.is_naic(raw.naic):
        raise UsageError("--naic: five digits")
    if not policy or len(policy) > 50 or not normalize.is_field_text(policy):
        raise UsageError("--policy: 1 to 50 characters of the policy number")
    return ProofInput(plate, state, raw.naic, policy, raw.day)


def post(
    engine: Engine,
    raw: ProofInput,
    settings: CaseSettings,
    who: str,
    portal: PortalSettings | None = None,
    *,
    wait_seconds: float | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Post the proof, verify it (live when possible) and move the case; what happened.
    ``wait_seconds``: how long to wait for a run working on the database (default
    :data:`PROOF_WAIT_SECONDS`). ``deadline`` (``time.monotonic()``; the page's budget): every
    step ends by then, the insurer's call, the wait for a run and the database's own waits
    for locks included; past it :class:`ProofBusy`, with nothing changed."""
    proof = check(raw)
    wait = PROOF_WAIT_SECONDS if wait_seconds is None else wait_seconds
    portal = portal or PortalSettings()
    try:
        return _post(engine, proof, settings, who, portal, wait, deadline)
    except (OperationalError, TimeoutError) as exc:  # TimeoutError: no time was left at all
        if deadline is None:
            raise
        raise ProofBusy(SLOW_DATABASE) from exc


def _post(
    engine: Engine,
    proof: ProofInput,
    settings: CaseSettings,
    who: str,
    portal: PortalSettings,
    wait: float,
    deadline: float | None,
) -> dict[str, Any]:
    with transaction(engine) as session, _by(session, deadline):
        registration = session.scalar(
            select(Registration).where(
                Registration.plate == proof.plate, Registration.state == proof.state
            )
        )
        if registration is None:
            raise NoRegistration("no registration has this plate in this state")
        insurer = session.get(Insurer, proof.naic)
        service = InsurerInput.from_row(insurer) if insurer and insurer.enabled else None
        vin = registration.vin
    seconds = (
        portal.budget_seconds if deadline is None else min(portal.budget_seconds, _left(deadline))
    )
    call = asyncio.run(_ask(service, proof, vin, portal, seconds)) if service else None
    live = _live_status(call)
    if deadline is not None:
        wait = min(wait, _left(deadline))
    with (
        exclusive(engine, wait, then="then posting the proof", busy=_proof_busy),
        transaction(engine) as session,
        _by(session, deadline) as tighten,
    ):
        batch_turn(session)
        tighten()  # what the wait for the batch lock left, for the rest
        record = load_records(session, [registration.id])[registration.id]
        tighten()
        counts = _record(session, record, proof, live, settings, who)
        row = record.open_case() or (record.cases[-1] if record.cases else None)
        tracking = next(
            (m.tracking_number for m in reversed(record.mvfs) if m.live_status is None), None
        )
        return {
            "plate": proof.plate,
            "state": proof.state,
            "naic": proof.naic,
            "live": live or ("unavailable" if service else "no_service"),
            "outcome": {LIVE_CONFIRMED: "posted", LIVE_UNCONFIRMED: "nis"}.get(live or "", "mvf"),
            "tracking_number": tracking if live is None else None,
            "case_state": row.case_state if row is not None else "NOC",
            **{k: v for k, v in counts.as_dict().items() if k in ("letters", "suspensions")},
        }


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ProofBusy(SLOW_DATABASE)
    return left


@contextmanager
def _by(session: Session, deadline: float | None) -> Iterator[Callable[[], None]]:
    """The transaction's statements, and its waits for locks, end by ``deadline`` (nothing
    when None); past it ``OperationalError``. Yields a call that tightens the limit to what is
    left (``TimeoutError`` when nothing is), for between steps."""
    seconds = None if deadline is None else _left(deadline)
    with db.all_waits_limited(session.connection(), seconds) as tighten:
        yield tighten


async def _ask(
    service: InsurerInput, proof: ProofInput, vin: str, portal: PortalSettings, seconds: float
) -> CallResult:
    client = InsurerClient(None, portal)
    try:
        ask = Ask(
            naic=proof.naic,
            policy_key=proof.policy,
            vin=vin,
            day=proof.day,
            reason=REQUEST_REASON,
            state=proof.state,
            requestor=portal.requestor,
        )
        return await client.verify(service, ask, seconds)
    finally:
        await client.aclose()


def _live_status(call: CallResult | None) -> str | None:
    """Confirmed or Unconfirmed from a usable answer; None when there was none."""
    if call is None:
        return None
    call = judged(call)  # SYSU or UREQ is no answer: the verdict rules say so, not this module
    if not usable(call) or call.answer is None:
        return None
    if call.answer.response_code == LIVE_CONFIRMED:
        return LIVE_CONFIRMED
    return LIVE_UNCONFIRMED


def tracking_number(day: date) -> str:
    return f"M{day.strftime('%Y%m%d')}{secrets.randbelow(10**8):08d}"


def _record(
    session: Any,
    record: Any,
    proof: ProofInput,
    live: str | None,
    settings: CaseSettings,
    who: str,
) -> Counts:
    registration = record.registration
    now = datetime.now(UTC)
    mvf = MvfRequest(
        tracking_number=tracking_number(proof.day),
        registration_id=registration.id,
        naic=proof.naic,
        policy_number=proof.policy,
        effective_date=proof.day,
        sent_on=proof.day,
        due_on=proof.day + timedelta(days=settings.mvf_answer_days),
        live_status=live,
        answer={LIVE_CONFIRMED: "NBS", LIVE_UNCONFIRMED: "NIS"}.get(live or ""),
        answered_on=proof.day if live else None,
    )
    if live == LIVE_CONFIRMED:
        session.add(mvf)
        period = CoveragePeriod(
            registration_id=registration.id,
            naic=proof.naic,
            policy_number=proof.policy,
            starts=proof.day,
            ends=None,
            source="live",
        )
        session.add(period)
        session.flush()
        record.confirmed.append(period)
        record.mvfs.append(mvf)
        if record.open_case() is None:
            session.add(
                Activity(
                    registration_id=registration.id,
                    case_id=None,
                    activity_date=proof.day,
                    code="IPA",
                    reason=None,
                    doc_id=None,
                    case_state=None,
                    caused_by=who[:60],
                    transaction_id=None,
                    recorded_at=now,
                )
            )
            return Counts(activities=1)
        return move_record(session, record, proof.day, settings, who)
    outcome = cw.NOT_INSURED if live == LIVE_UNCONFIRMED else cw.ASK_LATER
    writer = Writer(session, settings, who)
    counts = Counts()
    row = record.open_case()
    case = record.engine_case(row) if row is not None else None
    case, steps = cw.on_proof(
        case, f"mvf:{mvf.tracking_number}", proof.naic, proof.day, outcome, mvf.tracking_number
    )
    if row is None:
        row = writer.open(record, steps[0], "IPA", proof.naic)
        counts.cases_opened += 1
    mvf.case_id = row.id
    session.add(mvf)
    record.mvfs.append(mvf)
    session.flush()
    writer.steps(record, row, steps, counts, set())
    row.next_due = cw.next_due(record.engine_case(row), settings)
    return counts
