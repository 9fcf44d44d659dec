"""The reason-code decision table of SPEC §1, for both versions.

Version-neutral: it speaks 00200809 codes; :mod:`olv.iicmva` maps them to 00200510 numbers.
Infrastructure failures (maintenance, database, deadline) are step 1 and handled here too:
the policy store raises :class:`StoreUnavailable`, which becomes ``SYSU``.
"""

from __future__ import annotations

from collections.abc import Collection, Generator, Sequence
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


class BatchFound(NamedTuple):
    """What a batch's read found: policies by (NAIC, key), periods by (NAIC, VIN); a key or
    VIN read and not found is left out."""

    policies: dict[tuple[str, str], PolicyView]
    periods: dict[tuple[str, str], Sequence[Period]]


class BatchReads(NamedTuple):
    """A batch's reads: the policies of (NAIC, key) pairs, and the periods of (NAIC, VIN,
    key) triples, each read when its key is empty or finds no policy (the table reads the
    VIN then: asked together, both are one round trip)."""

    policies: list[tuple[str, str]]
    vins: list[tuple[str, str, str]]

    def one_by_one(self, store: PolicyStore) -> BatchFound:
        """The reads as single lookups, for a store with nothing to gain from sharing them."""
        policies: dict[tuple[str, str], PolicyView] = {}
        for key in self.policies:
            policy = store.find_policy(*key)
            if policy is not None:
                policies[key] = policy
        periods: dict[tuple[str, str], Sequence[Period]] = {}
        for naic, vin, key in self.vins:
            if (not key or (naic, key) not in policies) and (naic, vin) not in periods:
                found = store.vin_periods(naic, vin)
                if found:
                    periods[(naic, vin)] = found
        return BatchFound(policies, periods)


class BatchStore(PolicyStore, Protocol):
    """A store that also reads for a whole batch of requests at once (one round trip)."""

    def read_batch(self, reads: BatchReads) -> BatchFound: ...


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
        checked = _check(query, store, authorized, window, maintenance, naics)
        if isinstance(checked, Decision):
            return checked
        return _lookup(query, *checked, store)
    except StoreUnavailable:
        return _answer(Code.SYSU)


def _check(
    query: CoverageQuery,
    store: PolicyStore,
    authorized: bool,
    window: Window,
    maintenance: bool,
    naics: frozenset[str] | None,
) -> Decision | tuple[str, date]:
    """The table's steps before the policy lookup: their answer, or the NAIC and day the
    lookup (:func:`_lookup`) goes on with."""
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
    return naic, day


def _key_read(query: CoverageQuery) -> str | None:
    """The policy key the lookup reads first (normalized), or None where the key is
    ``UNKNOWN``: the lookup reads the VIN's periods then."""
    if normalize.is_unknown_key(query.policy_key):
        return None
    return normalize.policy_key(query.policy_key)


def _lookup(query: CoverageQuery, naic: str, day: date, store: PolicyStore) -> Decision:
    vin = normalize.vin(query.vin)
    key = _key_read(query)
    if key is None:
        periods = store.vin_periods(naic, vin)
        if any(p.covers(day) for p in periods):
            return CONFIRMED
        return _answer(Code.VIN2) if periods else _answer(Code.VIN1)

    policy = store.find_policy(naic, key)
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


class _Unread(Exception):
    """A read the batch has not made yet (raised by :class:`_Known` to :func:`deciding`)."""

    def __init__(self, kind: str, key: tuple[str, str]) -> None:
        self.kind, self.key = kind, key


class _Known:
    """The store as :func:`decide` sees it inside a batch: the policies and periods read so
    far; any other lookup is recorded for the batch's next read."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.policies: dict[tuple[str, str], PolicyView | None] = {}
        self.periods: dict[tuple[str, str], Sequence[Period]] = {}

    def healthy(self) -> bool:
        return self.store.healthy()  # cached by the store: no read per request

    def serves(self, naic: str) -> bool:
        return self.store.serves(naic)  # cached by the store: no read per request

    def find_policy(self, naic: str, policy_key: str) -> PolicyView | None:
        key = (naic, policy_key)
        try:
            return self.policies[key]
        except KeyError:
            raise _Unread("policy", key) from None

    def vin_periods(self, naic: str, vin: str) -> Sequence[Period]:
        try:
            return self.periods[(naic, vin)]
        except KeyError:
            raise _Unread("vin", (naic, vin)) from None

    def wants(
        self,
        policies: Collection[tuple[str, str]],
        vins: Collection[tuple[str, str]],
        fallbacks: Collection[tuple[str, str, str]],
    ) -> BatchReads:
        """The read of ``policies`` and ``vins``; and of the VIN of each (NAIC, VIN, key) in
        ``fallbacks`` whose key finds no policy (read ahead: the table asks for it next)."""
        triples = {(naic, vin, "") for naic, vin in vins} | set(fallbacks)
        return BatchReads(list(policies), list(triples))

    def learn(self, reads: BatchReads, found: BatchFound) -> None:
        for key in reads.policies:
            self.policies[key] = found.policies.get(key)
        for naic, vin, key in reads.vins:
            if not key or self.policies.get((naic, key)) is None:
                self.periods[(naic, vin)] = found.periods.get((naic, vin), ())


Steps = Generator[BatchReads, BatchFound, list[Decision]]


def decide_each(
    requests: Sequence[tuple[CoverageQuery, bool]],
    *,
    store: BatchStore,
    window: Window,
    maintenance: bool = False,
    naics: frozenset[str] | None = None,
) -> list[Decision]:
    """:func:`decide` for each (query, authorized) pair, the reads of all shared."""
    steps = deciding(requests, store=store, window=window, maintenance=maintenance, naics=naics)
    return read_through(steps, store)


def read_through(steps: Steps, store: BatchStore) -> list[Decision]:
    """The decisions of ``steps``, each read they ask for made on ``store``, blocking."""
    outcome = step(steps)
    while isinstance(outcome, BatchReads):
        try:
            found = store.read_batch(outcome)
        except StoreUnavailable as exc:
            outcome = step(steps, failure=exc)
        else:
            outcome = step(steps, found)
    return outcome.decisions


class Decided(NamedTuple):
    """The batch's decisions, once it needs no more reads."""

    decisions: list[Decision]


def step(
    steps: Steps, found: BatchFound | None = None, failure: StoreUnavailable | None = None
) -> BatchReads | Decided:
    """The batch's next read, or its decisions once it needs none: ``steps`` given what the
    last read ``found``, or that it failed (neither, to start)."""
    try:
        if failure is not None:
            return steps.throw(failure)
        return steps.send(found)  # type: ignore[arg-type]  # None starts a generator
    except StopIteration as done:
        return Decided(done.value)


def deciding(
    requests: Sequence[tuple[CoverageQuery, bool]],
    *,
    store: BatchStore,
    window: Window,
    maintenance: bool = False,
    naics: frozenset[str] | None = None,
) -> Steps:
    """:func:`decide` for each (query, authorized) pair, as steps between the batch's reads:
    each read it needs is yielded, and what it found sent back (or its failure thrown in), so
    that the caller makes it as it can (blocking, or awaited on an event loop).

    The steps before the lookup run once per request. The first pass asks, in one read for
    the whole batch, for the read each lookup starts with (:func:`_key_read`); each later
    pass runs the lookups whose reads are known and collects the reads the others wait for.
    The table reads a policy first and the VIN's periods when the key finds none: that VIN
    is read in the same call, so one read decides the batch (a second would follow only a
    read ahead that missed).
    """
    known = _Known(store)
    decisions: list[Decision | None] = [None] * len(requests)
    # The steps before the lookup, once each: a request that waits for a read goes on from
    # its lookup (with the NAIC and day its checks gave).
    lookups: dict[int, tuple[str, date]] = {}
    for i, (query, authorized) in enumerate(requests):
        try:
            checked = _check(query, known, authorized, window, maintenance, naics)
        except StoreUnavailable:
            checked = _answer(Code.SYSU)
        if isinstance(checked, Decision):
            decisions[i] = checked
        else:
            lookups[i] = checked
    pending = list(lookups)
    first = True
    while pending:
        policies: set[tuple[str, str]] = set()
        vins: set[tuple[str, str]] = set()
        fallbacks: set[tuple[str, str, str]] = set()
        waiting = []
        for i in pending:
            query = requests[i][0]
            naic = lookups[i][0]
            if first:
                # Every lookup starts with a read (_key_read says which): asked for without
                # running the lookup, which runs once what it reads is known.
                key = _key_read(query)
                kind, read = ("vin", normalize.vin(query.vin)) if key is None else ("policy", key)
            else:
                try:
                    decisions[i] = _lookup(query, *lookups[i], known)
                    continue
                except _Unread as unread:
                    kind, (naic, read) = unread.kind, unread.key
            if kind == "policy":
                policies.add((naic, read))
                fallbacks.add((naic, normalize.vin(query.vin), read))
            else:
                vins.add((naic, read))
            waiting.append(i)
        if waiting:
            reads = known.wants(policies, vins, fallbacks)
            try:
                known.learn(reads, (yield reads))
            except StoreUnavailable:
                for i in waiting:
                    decisions[i] = _answer(Code.SYSU)
                break
        pending, first = waiting, False
    return decisions  # type: ignore[return-value]
