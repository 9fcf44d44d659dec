"""From the insurers' answers to one result: the verdict rules of SPEC §5.

Which calls count as *unavailable* is decided here and only here (:func:`judged`): every call
the client reports as anything but ``ok``, and an answer in which the insurer itself says it
cannot answer (``SYSU``, or ``UREQ``: it does not know us) unless it says Confirmed.

* any Confirmed wins (``confirmed``);
* an insurer named by the book of business (or the card) that gave no usable answer makes the
  answer ``unable_to_verify`` with ``SYSU`` and the book-of-business evidence;
* otherwise the first named insurer's Unconfirmed is the answer (``unconfirmed``);
* a broadcast without a Confirmed is ``unconfirmed`` (``VIN1``) when every insurer answered,
  and ``unable_to_verify`` when one did not, or when a record names an insurer not asked.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from olv import normalize
from olv.iicmva import Code
from portal import reasons
from portal.insurer_client import CallResult, InsurerConfig
from portal.schemas import BookOfBusiness, VerifyResult

UNKNOWN = normalize.UNKNOWN_POLICY_KEY
UNAVAILABLE = "unavailable"  # the outcome logged for an answer that says SYSU or UREQ
# Both versions' spellings: 00200809 names, 00200510 numbers.
_UNAVAILABLE_CODES = frozenset({Code.SYSU.value, "12", Code.UREQ.value, "6"})


def judged(call: CallResult) -> CallResult:
    """The call as the verdict rules count it: an answer (not Confirmed) carrying SYSU or UREQ
    becomes outcome ``unavailable``; everything else is as the client reported it."""
    answer = call.answer
    if (
        call.outcome == "ok"
        and answer is not None
        and answer.response_code != "Confirmed"
        and _UNAVAILABLE_CODES & set(answer.codes)
    ):
        detail = "the insurer answered " + " ".join(answer.codes)
        return dataclasses.replace(call, outcome=UNAVAILABLE, detail=detail)
    return call


def usable(call: CallResult) -> bool:
    """Whether a judged call gave an answer the verdict can rest on."""
    return call.outcome == "ok"


@dataclass(frozen=True)
class Target:
    insurer: InsurerConfig
    policy_key: str
    record: dict[str, Any] | None  # the BoB record that named this insurer


@dataclass
class Plan:
    vin: str
    state: str | None
    targets: list[Target] = field(default_factory=list)
    broadcast: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)


def compose(
    day: date,
    plan: Plan,
    calls: list[CallResult],
    winner: Target | None,
    received: float,
    query_id: str,
) -> VerifyResult:
    by_naic = {call.naic: call for call in calls}
    evidence_record = winner.record if winner else (plan.records[0] if plan.records else None)
    base: dict[str, Any] = {
        "query_id": query_id,
        "vin": plan.vin,
        "date": day,
        "elapsed_ms": 0.0,
    }
    if winner is not None:
        unknown = winner.policy_key == UNKNOWN
        fields = dict(
            status="Confirmed",
            verdict="confirmed",
            reasons=[],
            naic=winner.insurer.naic,
            insurer=winner.insurer.name,
            policy_number=None if unknown else winner.policy_key,
            source="broadcast" if plan.broadcast else "insurer",
            book_of_business=_evidence(evidence_record),
        )
    else:
        fields = _unconfirmed(plan, calls, by_naic)
    base.update(fields)
    base["elapsed_ms"] = round((time.monotonic() - received) * 1000, 2)
    return VerifyResult(**base)


def _unconfirmed(
    plan: Plan, calls: list[CallResult], by_naic: dict[str, CallResult]
) -> dict[str, Any]:
    # The insurers named by the BoB (or the card) come first: their answer is the answer.
    for target in plan.targets:
        call = by_naic.get(target.insurer.naic)
        if call is None or not usable(call):
            return _unable(target, target.record or _record_for(plan, target))
    if plan.targets:
        target = plan.targets[0]
        call = by_naic[target.insurer.naic]
        assert call.answer is not None
        return dict(
            status="Unconfirmed",
            verdict="unconfirmed",
            reasons=reasons.describe(call.answer.codes, asked_unknown=target.policy_key == UNKNOWN),
            naic=target.insurer.naic,
            insurer=target.insurer.name,
            policy_number=None if target.policy_key == UNKNOWN else target.policy_key,
            source="insurer",
            book_of_business=_evidence(target.record),
        )
    # Broadcast without a Confirmed.
    record = plan.records[0] if plan.records else None
    unavailable = any(not usable(call) for call in calls)
    if record is not None or unavailable:
        # A record names an insurer we could not ask, or someone did not answer: an
        # officer must not read that as "uninsured".
        return dict(
            status="Unconfirmed",
            verdict="unable_to_verify",
            reasons=reasons.unavailable(),
            naic=record["naic"] if record else None,
            insurer=None,
            policy_number=record["policy_number"] if record else None,
            source="book_of_business" if record else "broadcast",
            book_of_business=_evidence(record),
        )
    return dict(
        status="Unconfirmed",
        verdict="unconfirmed",
        reasons=reasons.not_found(),
        naic=None,
        insurer=None,
        policy_number=None,
        source="broadcast",
        book_of_business=None,
    )


def confirmed(call: CallResult) -> bool:
    return call.answer is not None and call.answer.response_code == "Confirmed"


def _record_for(plan: Plan, target: Target) -> dict[str, Any] | None:
    return next((r for r in plan.records if r["naic"] == target.insurer.naic), None)


def _unable(target: Target, record: dict[str, Any] | None) -> dict[str, Any]:
    policy = None if target.policy_key == UNKNOWN else target.policy_key
    return dict(
        status="Unconfirmed",
        verdict="unable_to_verify",
        reasons=reasons.unavailable(),
        naic=target.insurer.naic,
        insurer=target.insurer.name,
        policy_number=policy or (record["policy_number"] if record else None),
        source="book_of_business" if record else "insurer",
        book_of_business=_evidence(record),
    )


def _evidence(record: dict[str, Any] | None) -> BookOfBusiness | None:
    if record is None:
        return None
    return BookOfBusiness(
        naic=record["naic"],
        policy_number=record["policy_number"],
        policy_type=record["policy_type"],
        effective_date=record["effective_date"],
        expiration_date=record["expiration_date"],
        file=record["source_file"],
        loaded_at=record["loaded_at"],
    )
