"""The case state machine (SPEC §6 "Coverage and cases"), as pure functions.

A case opens on a cancellation with no other coverage on its date (a lapse), on paper proof
that needs the insurer's verification, or, in book-of-business states, on a VIN missing from
consecutive monthly loads. Each call of :func:`advance` returns the transitions due on one day,
each an activity with the guide's code, the case state after it and, for mail, the letter to
print. Applying them and calling again for the same day returns nothing: that is what makes a
daily run idempotent, whatever the store does around it.

Codes (IIES guide): activities XLC, NBS, REI, IPA, REC, NIS, MVF, LTF, LTS, LNI, NIA, LTR,
RSI, RSV, RSN, RIR, UND; case states NEW, FIQ, SIQ, SMV, IRS, CLN, CLC, CLS; reasons R09/R10
(lapse under 91 days / 91 or more) and the transaction codes that closed a case.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from enforcement.case_settings import CaseSettings
from enforcement.timeline import Span, Timeline

# Case states.
NEW, FIQ, SIQ, SMV, IRS = "NEW", "FIQ", "SIQ", "SMV", "IRS"
CLN, CLC, CLS = "CLN", "CLC", "CLS"
OPEN_STATES = frozenset({NEW, FIQ, SIQ, SMV, IRS})
CLOSED_STATES = frozenset({CLN, CLC, CLS})

# Kinds of case: what opened it.
LAPSE, VERIFICATION, BOB = "lapse", "verification", "bob"

# Letters, by the activity that sends them.
LETTERS = {
    "LTF": "first_inquiry",
    "LTS": "second_inquiry",
    "LNI": "niv",
    "NIA": "no_insurance_activity",
    "RSI": "suspension",
    "RSV": "suspension",
    "RSN": "suspension",
    "LTR": "rescission",
    "RIR": "restoration",
}
_SUSPENSION_AFTER = {"LTF": "RSI", "LTS": "RSI", "NIA": "RSI", "LNI": "RSV"}


@dataclass(frozen=True)
class Case:
    """What the engine needs to know of an open case."""

    kind: str
    state: str
    opened: date  # start of the lapse, the proof date, or the day the BoB rule fired
    open_ref: str  # the posting or proof that opened it
    last_letter: str | None = None  # activity code of the last inquiry letter
    last_letter_day: date | None = None
    mvf_day: date | None = None
    mvf_naic: str | None = None
    mvf_tracking: str | None = None

    @property
    def suspended(self) -> bool:
        return self.state == IRS


@dataclass(frozen=True)
class Step:
    """One transition: an activity, and the case state it leaves."""

    code: str
    day: date
    state: str
    reason: str | None = None
    ref: str | None = None  # the posting this activity is (NBS that closed a case, …)
    cause: str = "run"  # who or what caused it
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def letter(self) -> str | None:
        return LETTERS.get(self.code)


@dataclass(frozen=True)
class Facts:
    """The record as of the day, besides its coverage."""

    timeline: Timeline
    nis: tuple[tuple[str, str, date], ...] = ()  # (naic, ref, day posted) of NIS answers
    unacceptable: tuple[date, ...] = ()  # days paper proof was found unacceptable (IPU)
    penalty_lapses: tuple[date, ...] = ()  # start days of earlier lapses a penalty could settle


def opening(timeline: Timeline, done: Iterable[str], today: date) -> Step | None:
    """The cancellation that opens a lapse case today, if any.

    ``done`` holds the refs that have already opened a case on this record, so a closed case's
    cancellation does not open another one. Called only when the record has no open case.
    """
    seen = set(done)
    for xlc in sorted(timeline.cancellations, key=lambda p: (p.effective, p.seq)):
        if xlc.ref in seen or xlc.effective > today or timeline.covered(xlc.effective):
            continue
        return Step("XLC", xlc.effective, NEW, ref=xlc.ref, cause=f"insurer {xlc.naic}")
    return None


def open_case(step: Step, kind: str) -> Case:
    """The case an opening step creates."""
    return Case(kind=kind, state=step.state, opened=step.day, open_ref=step.ref or "")


def apply(case: Case, step: Step) -> Case:
    """The case after one of its steps."""
    changed = replace(case, state=step.state)
    if step.code in _SUSPENSION_AFTER:
        return replace(changed, last_letter=step.code, last_letter_day=step.day)
    if step.code == "MVF":
        return replace(
            changed,
            mvf_day=step.day,
            mvf_naic=str(step.detail.get("naic") or "") or None,
            mvf_tracking=str(step.detail.get("tracking") or "") or None,
        )
    return changed


def advance(
    case: Case, facts: Facts, today: date, settings: CaseSettings
) -> tuple[Case, list[Step]]:
    """Every transition due by ``today``, in order, and the case after them."""
    steps: list[Step] = []
    while case.state in OPEN_STATES:
        step = _next(case, facts, today, settings)
        if step is None:
            break
        steps.append(step)
        case = apply(case, step)
    return case, steps


def next_due(case: Case, settings: CaseSettings) -> date | None:
    """The day the case moves next if nothing arrives (a letter or a suspension), or None."""
    if case.state == NEW:
        return case.opened + timedelta(days=settings.grace_days)
    if case.state == SMV and case.mvf_day is not None:
        return case.mvf_day + timedelta(days=settings.mvf_answer_days)
    if case.state in (FIQ, SIQ) and case.last_letter_day is not None:
        return case.last_letter_day + timedelta(days=settings.letter_days)
    return None


def respond_by(code: str, day: date, settings: CaseSettings) -> date | None:
    """The answer date printed on a letter: inquiry letters give the days to suspension."""
    if code in _SUSPENSION_AFTER:
        return day + timedelta(days=settings.letter_days)
    return None


def _next(case: Case, facts: Facts, today: date, settings: CaseSettings) -> Step | None:
    if case.kind == LAPSE and not facts.timeline.has_cancellation(case.open_ref):
        return _rescinded(case, today)
    covered = facts.timeline.first_covered(case.opened, today)
    if covered is not None:
        return _covered(case, facts, covered, today, settings)
    if case.mvf_naic is not None and case.state == SMV:
        mvf_day = case.mvf_day or case.opened
        answered = any(naic == case.mvf_naic and day >= mvf_day for naic, _, day in facts.nis)
        if answered:
            return Step("RSN", today, IRS, reason="NIS", cause=f"insurer {case.mvf_naic} NIS")
    if case.suspended:
        return None
    if case.state == NEW:
        if today >= case.opened + timedelta(days=settings.grace_days):
            return Step("LTF", today, FIQ, cause="grace days over")
        return None
    if case.state == SMV and case.mvf_day is not None:
        if today >= case.mvf_day + timedelta(days=settings.mvf_answer_days):
            state = SIQ if case.last_letter else FIQ
            return Step("LNI", today, state, cause="no answer to the MVF")
        return None
    if case.last_letter is None or case.last_letter_day is None:
        return None
    if case.state == FIQ and any(day > case.last_letter_day for day in facts.unacceptable):
        return Step("LTS", today, SIQ, reason="R19", cause="proof unacceptable")
    if today >= case.last_letter_day + timedelta(days=settings.letter_days):
        code = _SUSPENSION_AFTER[case.last_letter]
        return Step(code, today, IRS, cause=f"no proof {settings.letter_days} days after letter")
    return None


def _rescinded(case: Case, today: date) -> Step:
    """The opening cancellation was taken back: the case never had a cause."""
    if case.suspended:
        return Step("RIR", today, CLS, reason="REC", cause="cancellation rescinded")
    if case.last_letter is not None:
        return Step("LTR", today, CLS, reason="REC", cause="cancellation rescinded")
    return Step("REC", today, CLS, reason="REC", cause="cancellation rescinded")


def _covered(
    case: Case,
    facts: Facts,
    covered: tuple[date, Span],
    today: date,
    settings: CaseSettings,
) -> Step:
    """Coverage arrived: close, with the lapse it leaves (if any) and civil-penalty eligibility."""
    start, span = covered
    lapse = (start - case.opened).days
    detail: dict[str, object] = {"lapse_days": lapse}
    if lapse <= 0:
        state, reason = CLN, None
    else:
        state = CLC
        reason = "R09" if lapse <= settings.penalty_max_lapse_days else "R10"
        detail["penalty_eligible"] = penalty_eligible(
            case.opened, lapse, facts.penalty_lapses, settings
        )
    if case.suspended:
        # The suspension ends with the case; the restoration notice says so.
        cause = f"coverage from insurer {span.naic}"
        return Step("RIR", today, state, reason=reason, cause=cause, detail=detail)
    return Step(
        span.code,
        today,
        state,
        reason=reason or span.code,
        ref=span.ref,
        cause=f"insurer {span.naic}",
        detail=detail,
    )


def penalty_eligible(
    lapse_start: date, lapse_days: int, earlier: Iterable[date], settings: CaseSettings
) -> bool:
    """A civil penalty may settle a lapse of at most the limit, once in the window."""
    if lapse_days <= 0 or lapse_days > settings.penalty_max_lapse_days:
        return False
    window_start = _months_before(lapse_start, settings.penalty_window_months)
    return not any(window_start <= day < lapse_start for day in earlier)


def _months_before(day: date, months: int) -> date:
    total = day.year * 12 + (day.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    # Clamp the day to the month's length (29 February, 31st of short months).
    for candidate in (day.day, 30, 29, 28):
        try:
            return date(year, month, min(day.day, candidate))
        except ValueError:
            continue
    return date(year, month, 28)


# --- paper proof ------------------------------------------------------------------------------

NOT_INSURED, ASK_LATER = "not_insured", "ask_later"


def on_proof(
    case: Case | None,
    proof_ref: str,
    naic: str,
    day: date,
    outcome: str,
    tracking: str | None,
) -> tuple[Case, list[Step]]:
    """Paper proof the insurer did not confirm live: it opens or moves a case.

    ``outcome``: the insurer answered not insured (counts as NIS: suspension), or could not be
    asked now (an MVF with ``tracking`` waits for its NBS/NIS answer). Proof confirmed live is
    not for this function: it posts as coverage and :func:`advance` closes any open case.
    """
    if case is None:
        opened = Step("IPA", day, NEW, ref=proof_ref, cause="paper proof")
        case = open_case(opened, VERIFICATION)
    else:
        opened = Step("IPA", day, case.state, ref=proof_ref, cause="paper proof")
    if outcome == NOT_INSURED:
        nis = Step("NIS", day, case.state, reason="NIS", cause=f"insurer {naic} live answer")
        suspend = Step("RSN", day, IRS, reason="NIS", cause=f"insurer {naic} live answer")
        return apply(case, suspend), [opened, nis, suspend]
    mvf = Step(
        "MVF",
        day,
        IRS if case.suspended else SMV,  # a suspension stands until the answer comes
        cause=f"insurer {naic}",
        detail={"naic": naic, "tracking": tracking or ""},
    )
    return apply(case, mvf), [opened, mvf]
