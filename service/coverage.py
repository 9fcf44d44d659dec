"""The reason-code decision table of SPEC §1, for both versions.

Version-neutral: it speaks 00200809 codes; :mod:`olv.iicmva` maps them to 00200510 numbers.
Infrastructure failures (maintenance, database, deadline) are step 1 and handled here too:
the policy store raises :class:`StoreUnavailable`, which becomes ``SYSU``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import NamedTuple, Protocol

from olv import normalize
from olv.coverage_dates import covered_on
from olv.errors import OlvError
from olv.iicmva import FLEET, Code
from service.request import CoverageQuery


class StoreUnavailable(OlvError):
    """The policy store cannot answer (database down, timed out)."""


class Period(NamedTuple):
    """One coverage row of a policy (a tuple: one or more are made per verification, and a
    frozen dataclass cost several times as much to build)."""

    policy_id: int
    vin: str | None
    effective: date
    expiration: date | None
    cancellation: date | None

    def covers(self, day: date) -> bool:
        return covered_on(day, self.effective, self.expiration, self.cancellation)


class PolicyView(NamedTuple):
    id: int
    policy_type: str
    pending_review: bool
    periods: Sequence[Period]


class PolicyStore(Protocol):
    def healthy(self) -> bool: ...
    def serves(self, naic: str) -> bool: ...
    def find_policy(self, naic: str, policy_key: str) -> PolicyView | None: ...
    def vin_periods(self, naic: str, vin: str) -> Sequence[Period]: ...


@dataclass(frozen=True, slots=True)
class Window:
    today: date
    past_days: int
    future_days: int
    first: date = field(init=False)
    last: date = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "first", self.today - timedelta(days=self.past_days))
        object.__setattr__(self, "last", self.today + timedelta(days=self.future_days))

    def contains(self, day: date) -> bool:
        return self.first <= day <= self.last


@dataclass(frozen=True, slots=True)
class Decision:
    codes: tuple[Code, ...]

    @property
    def confirmed(self) -> bool:
        return not self.codes

    @property
    def response_code(self) -> str:
        return "Confirmed" if self.confirmed else "Unconfirmed"


CONFIRMED = Decision(())


def _answer(*codes: Code) -> Decision:
    return Decision(tuple(dict.fromkeys(codes)))


def decide(
    query: CoverageQuery,
    *,
    store: PolicyStore,
    authorized: bool,
    window: Window,
    maintenance: bool = False,
    naics: frozenset[str] | None = None,
) -> Decision:
    """Walk the table in order; the first step that yields codes ends the evaluation."""
    try:
        if maintenance or not store.healthy():
            return _answer(Code.SYSU)
        if not authorized:
            return _answer(Code.UREQ)
        if query.format_errors:
            return _answer(Code.IDF)
        missing = [
            code
            for value, code in (
                (query.naic, Code.NAIC1),
                (query.policy_key, Code.PKEY1),
                (query.vin, Code.VIN4),
                (query.verification_date, Code.VDT2),
            )
            if normalize.is_blank(value)
        ]
        if missing:
            return _answer(*missing)
        naic = (query.naic or "").strip()
        if not (naic in naics if naics else store.serves(naic)):
            return _answer(Code.NAIC2)
        day = query.day
        if day is None:  # the schema check already guarantees a date; keep the table total
            return _answer(Code.IDF)
        if not window.contains(day):
            return _answer(Code.VDT1)
        return _lookup(query, naic, day, store)
    except StoreUnavailable:
        return _answer(Code.SYSU)


def _lookup(query: CoverageQuery, naic: str, day: date, store: PolicyStore) -> Decision:
    vin = normalize.vin(query.vin)
    if normalize.is_unknown_key(query.policy_key):
        periods = store.vin_periods(naic, vin)
        if any(p.covers(day) for p in periods):
            return CONFIRMED
        return _answer(Code.VIN2) if periods else _answer(Code.VIN1)

    policy = store.find_policy(naic, normalize.policy_key(query.policy_key))
    if policy is not None:
        if policy.pending_review:
            return _answer(Code.POL1)
        if policy.policy_type == FLEET:
            relevant = list(policy.periods)
        else:
            relevant = [p for p in policy.periods if p.vin == vin]
            if not relevant:
                return _answer(Code.PKEY4)
        return CONFIRMED if any(p.covers(day) for p in relevant) else _answer(Code.PKEY3)

    periods = store.vin_periods(naic, vin)
    if any(p.covers(day) for p in periods):
        return _answer(Code.VIN3)
    if periods:
        return _answer(Code.VIN2, Code.VIN3)
    return _answer(Code.PKEY2, Code.VIN1)
