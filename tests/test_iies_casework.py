"""The coverage timeline and the case state machine, as pure functions (SPEC §6)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from enforcement import casework as cw
from enforcement.case_settings import CaseSettings
from enforcement.timeline import Posting, build

D0 = date(2026, 3, 1)
SETTINGS = CaseSettings()


def day(n: int) -> date:
    return D0 + timedelta(days=n)


def p(kind: str, naic: str, n: int, ref: str, seq: int = 0) -> Posting:
    return Posting(kind, naic, day(n), ref, seq)


def facts(*postings: Posting, **kwargs: object) -> cw.Facts:
    return cw.Facts(timeline=build(postings), **kwargs)  # type: ignore[arg-type]


def lapse_case(xlc_day: int = 0) -> cw.Case:
    return cw.Case(kind=cw.LAPSE, state=cw.NEW, opened=day(xlc_day), open_ref="x1")


def daily(case: cw.Case, f: cw.Facts, first: int, last: int) -> tuple[cw.Case, list[str]]:
    """Runs on every day from ``first`` to ``last``, as the daily timer does."""
    codes: list[str] = []
    for n in range(first, last + 1):
        case, steps = cw.advance(case, f, day(n), SETTINGS)
        codes += [s.code for s in steps]
    return case, codes


# --- timeline -------------------------------------------------------------------------------


def test_nbs_then_xlc_covers_up_to_the_cancellation_day() -> None:
    line = build([p("NBS", "11111", -100, "n1"), p("XLC", "11111", 0, "x1")])
    assert line.covered(day(-100)) and line.covered(day(-1))
    assert not line.covered(day(0)) and not line.covered(day(-101))


def test_rec_takes_back_the_cancellation_and_rep_the_new_business() -> None:
    line = build(
        [p("NBS", "11111", -100, "n1"), p("XLC", "11111", 0, "x1"), p("REC", "11111", 0, "r1")]
    )
    assert line.covered(day(50)) and not line.cancellations
    line = build([p("NBS", "11111", 5, "n1"), p("REP", "11111", 5, "r1")])
    assert not line.covered(day(10))


def test_a_rescission_of_another_insurer_or_date_takes_nothing_back() -> None:
    line = build([p("XLC", "11111", 0, "x1"), p("REC", "22222", 0, "r1")])
    assert line.has_cancellation("x1")
    line = build([p("XLC", "11111", 0, "x1"), p("REC", "11111", 1, "r1")])
    assert line.has_cancellation("x1")


def test_cancellation_without_new_business_ends_coverage_of_unknown_start() -> None:
    line = build([p("XLC", "11111", 0, "x1")])
    assert line.covered(day(-3000)) and not line.covered(day(0))


def test_first_covered_names_the_posting_that_gives_coverage() -> None:
    line = build([p("XLC", "11111", 0, "x1"), p("NBS", "22222", 12, "n2")])
    found = line.first_covered(day(0), day(30))
    assert found is not None and found[0] == day(12) and found[1].ref == "n2"
    assert line.first_covered(day(0), day(11)) is None


# --- lapse cases ----------------------------------------------------------------------------


def test_cancellation_with_no_other_coverage_opens_a_case() -> None:
    line = build([p("NBS", "11111", -100, "n1"), p("XLC", "11111", 0, "x1")])
    step = cw.opening(line, done=(), today=day(0))
    assert step is not None and (step.code, step.state, step.day) == ("XLC", "NEW", day(0))


def test_cancellation_covered_by_another_insurer_opens_nothing() -> None:
    line = build([p("NBS", "22222", -5, "n2"), p("XLC", "11111", 0, "x1")])
    assert cw.opening(line, done=(), today=day(0)) is None


def test_future_cancellation_and_one_that_already_opened_a_case_open_nothing() -> None:
    line = build([p("XLC", "11111", 5, "x1")])
    assert cw.opening(line, done=(), today=day(4)) is None
    assert cw.opening(line, done=("x1",), today=day(9)) is None


def test_grace_then_first_inquiry_then_suspension() -> None:
    f = facts(p("XLC", "11111", 0, "x1"))
    case, steps = cw.advance(lapse_case(), f, day(9), SETTINGS)
    assert steps == []
    case, steps = cw.advance(case, f, day(10), SETTINGS)
    assert [(s.code, s.state, s.letter) for s in steps] == [("LTF", "FIQ", "first_inquiry")]
    case, steps = cw.advance(case, f, day(39), SETTINGS)
    assert steps == []
    case, steps = cw.advance(case, f, day(40), SETTINGS)
    assert [(s.code, s.state, s.letter) for s in steps] == [("RSI", "IRS", "suspension")]
    assert cw.advance(case, f, day(40), SETTINGS)[1] == []  # the same day again: nothing


def test_a_late_cancellation_gets_its_letter_on_the_run_day_and_the_full_time_to_answer() -> None:
    f = facts(p("XLC", "11111", 0, "x1"))  # filed late: the grace is over on arrival
    case, steps = cw.advance(lapse_case(), f, day(25), SETTINGS)
    assert [(s.code, s.day) for s in steps] == [("LTF", day(25))]  # mailed the day it is sent
    _, later = cw.advance(case, f, day(80), SETTINGS)
    assert [s.code for s in later] == ["RSI"]


def test_day_counts_are_settings() -> None:
    settings = CaseSettings(grace_days=3, letter_days=5)
    f = facts(p("XLC", "11111", 0, "x1"))
    case, steps = cw.advance(lapse_case(), f, day(3), settings)
    assert [s.code for s in steps] == ["LTF"]
    _, steps = cw.advance(case, f, day(8), settings)
    assert [s.code for s in steps] == ["RSI"]


def test_coverage_from_the_cancellation_day_closes_without_lapse() -> None:
    f = facts(p("XLC", "11111", 0, "x1"), p("NBS", "22222", 0, "n2"))
    case, steps = cw.advance(lapse_case(), f, day(3), SETTINGS)
    assert [(s.code, s.state, s.ref) for s in steps] == [("NBS", "CLN", "n2")]
    assert steps[0].detail["lapse_days"] == 0


@pytest.mark.parametrize(
    ("gap", "reason", "eligible"), [(20, "R09", True), (90, "R09", True), (91, "R10", False)]
)
def test_coverage_after_a_lapse_closes_with_its_days_and_penalty_eligibility(
    gap: int, reason: str, eligible: bool
) -> None:
    f = facts(p("XLC", "11111", 0, "x1"), p("NBS", "22222", gap, "n2"))
    settings = CaseSettings(letter_days=365)  # keep the case from suspending first
    case, steps = cw.advance(lapse_case(), f, day(gap), settings)
    assert steps[-1].state == "CLC" and steps[-1].reason == reason
    assert steps[-1].detail == {"lapse_days": gap, "penalty_eligible": eligible}


def test_civil_penalty_only_once_in_36_months() -> None:
    earlier = (day(-365 * 2),)
    assert not cw.penalty_eligible(day(0), 10, earlier, SETTINGS)
    assert cw.penalty_eligible(day(0), 10, (day(-365 * 3 - 5),), SETTINGS)


def test_coverage_after_suspension_ends_it_with_a_restoration_notice() -> None:
    f = facts(p("XLC", "11111", 0, "x1"))
    case, codes = daily(lapse_case(), f, 0, 45)
    assert case.state == "IRS" and codes == ["LTF", "RSI"]
    f = facts(p("XLC", "11111", 0, "x1"), p("NBS", "33333", 50, "n3"))
    case, steps = cw.advance(case, f, day(51), SETTINGS)
    assert [(s.code, s.state, s.letter) for s in steps] == [("RIR", "CLC", "restoration")]


@pytest.mark.parametrize(
    ("run_to", "codes"),
    [(5, ["REC"]), (15, ["LTR"]), (45, ["RIR"])],
)
def test_rescinded_cancellation_closes_the_case_and_takes_back_what_was_sent(
    run_to: int, codes: list[str]
) -> None:
    f = facts(p("XLC", "11111", 0, "x1"))
    case, _ = daily(lapse_case(), f, 0, run_to)
    f = facts(p("XLC", "11111", 0, "x1"), p("REC", "11111", 0, "r1"))
    case, steps = cw.advance(case, f, day(run_to + 1), SETTINGS)
    assert [s.code for s in steps] == codes and case.state == "CLS"


def test_unacceptable_proof_brings_a_second_inquiry_with_a_new_deadline() -> None:
    base = facts(p("XLC", "11111", 0, "x1"))
    case, _ = cw.advance(lapse_case(), base, day(10), SETTINGS)
    f = cw.Facts(timeline=base.timeline, unacceptable=(day(20),))
    case, steps = cw.advance(case, f, day(20), SETTINGS)
    assert [(s.code, s.state) for s in steps] == [("LTS", "SIQ")]
    assert cw.advance(case, f, day(49), SETTINGS)[1] == []
    assert [s.code for s in cw.advance(case, f, day(50), SETTINGS)[1]] == ["RSI"]


# --- paper proof and mandatory verification -------------------------------------------------


def test_proof_not_confirmed_live_sends_an_mvf_then_niv_then_suspension() -> None:
    case, steps = cw.on_proof(None, "p1", "44444", day(0), cw.ASK_LATER, "T000001")
    assert [(s.code, s.state) for s in steps] == [("IPA", "NEW"), ("MVF", "SMV")]
    assert case.kind == cw.VERIFICATION and case.mvf_tracking == "T000001"
    f = facts()
    case, steps = cw.advance(case, f, day(13), SETTINGS)
    assert steps == []
    case, steps = cw.advance(case, f, day(14), SETTINGS)
    assert [(s.code, s.state, s.letter) for s in steps] == [("LNI", "FIQ", "niv")]
    case, steps = cw.advance(case, f, day(44), SETTINGS)
    assert [(s.code, s.state) for s in steps] == [("RSV", "IRS")]


def test_nbs_answer_to_the_mvf_closes_the_verification_case() -> None:
    case, _ = cw.on_proof(None, "p1", "44444", day(0), cw.ASK_LATER, "T1")
    f = facts(p("NBS", "44444", 0, "n4"))
    case, steps = cw.advance(case, f, day(5), SETTINGS)
    assert [(s.code, s.state) for s in steps] == [("NBS", "CLN")]


def test_nis_answer_to_the_mvf_suspends() -> None:
    case, _ = cw.on_proof(None, "p1", "44444", day(0), cw.ASK_LATER, "T1")
    f = cw.Facts(timeline=build([]), nis=(("44444", "s1", day(3)),))
    case, steps = cw.advance(case, f, day(3), SETTINGS)
    assert [(s.code, s.state, s.letter) for s in steps] == [("RSN", "IRS", "suspension")]


def test_nis_from_another_insurer_or_before_the_mvf_does_not_count() -> None:
    case, _ = cw.on_proof(None, "p1", "44444", day(5), cw.ASK_LATER, "T1")
    f = cw.Facts(timeline=build([]), nis=(("55555", "s1", day(6)), ("44444", "s2", day(1))))
    assert cw.advance(case, f, day(7), SETTINGS)[1] == []


def test_live_unconfirmed_counts_as_nis() -> None:
    case, steps = cw.on_proof(None, "p1", "44444", day(0), cw.NOT_INSURED, None)
    assert [(s.code, s.state) for s in steps] == [("IPA", "NEW"), ("NIS", "NEW"), ("RSN", "IRS")]
    assert case.state == "IRS"


def test_proof_on_an_open_lapse_case_moves_it_to_verification() -> None:
    f = facts(p("XLC", "11111", 0, "x1"))
    case, _ = cw.advance(lapse_case(), f, day(12), SETTINGS)
    case, steps = cw.on_proof(case, "p1", "44444", day(15), cw.ASK_LATER, "T1")
    assert case.state == "SMV" and [s.code for s in steps] == ["IPA", "MVF"]
    # The insurer confirms with the MVF date: the lapse is the days between.
    f = facts(p("XLC", "11111", 0, "x1"), p("NBS", "44444", 15, "n4"))
    case, steps = cw.advance(case, f, day(20), SETTINGS)
    assert steps[-1].state == "CLC" and steps[-1].detail["lapse_days"] == 15


def test_a_suspension_stands_while_the_mvf_waits() -> None:
    f = facts(p("XLC", "11111", 0, "x1"))
    case, _ = daily(lapse_case(), f, 0, 45)
    case, steps = cw.on_proof(case, "p1", "44444", day(50), cw.ASK_LATER, "T1")
    assert case.state == "IRS" and steps[-1].code == "MVF"
    assert cw.advance(case, f, day(90), SETTINGS)[1] == []
