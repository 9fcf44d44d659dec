"""One verification, end to end: read the request, decide, build the answer, audit it.

A :class:`Verifier` holds the per-process resources (engine, store, schemas, audit writer,
the threads that run database calls); it is built lazily in each server worker after the
fork, never at import.

The server settles a request in two steps: :meth:`Verifier.settle` reads it and decides on
the event loop, the database part under the deadline (:mod:`service.db_deadline`), then
Spyne's envelope handling calls :meth:`Verifier.answer`, which only builds and audits.
Called without a settled decision (plain WSGI), ``answer`` decides itself, blocking its
caller at most until the deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from functools import partial
from typing import NamedTuple

from lxml import etree

import xsd
from olv import db, normalize, read_replica
from olv.config import Settings
from olv.iicmva import V0510, V0809, Code
from service import response
from service.audit import AuditEntry, AuditWriter
from service.auth import Requester
from service.coalesce import AwaitedReads, Coalescer
from service.coverage import (
    CONFIRMED,
    Decision,
    Steps,
    StoreUnavailable,
    Window,
    decide,
    deciding,
    read_through,
)
from service.db_deadline import DeadlineGate
from service.request import CoverageQuery, elements, read
from service.store import SqlPolicyStore
from service.versions import SPECS, detect

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, str | None] = {
    f"/iicmva/{V0510}": V0510,
    f"/iicmva/{V0809}": V0809,
    "/iicmva": None,  # auto-detect by the request's shape
}
_SYSU = Decision((Code.SYSU,))
_UNCHECKED = frozenset({Code.UREQ, Code.SYSU})  # answers given before the request was checked
_WINDOW_RECHECK_SECONDS = 60.0


class Settled(NamedTuple):
    """A request read and decided, waiting for its answer to be built (a tuple: one per
    request, cheaper to build than a frozen dataclass)."""

    request: etree._Element
    query: CoverageQuery
    decision: Decision


class Verifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = db.make_engine(settings.database_url, wait_seconds=settings.deadline_seconds)
        self.replica = read_replica.from_settings(settings)  # None without OLV_DATABASE_READ_URL
        self.store = SqlPolicyStore(self.engine, replica=self.replica)
        self.gate = DeadlineGate(self.store)
        # The requests of one turn of the event loop share their reads (service.coalesce),
        # awaited on the loop where the store can.
        awaited = AwaitedReads(self.store.awaits, self._steps, self.store.read_batch_awaited)
        self.batch = Coalescer(self.gate, self._decide_each, _failed, awaited)
        self.audit = AuditWriter(
            self.engine, settings.audit_flush_seconds, settings.audit_batch_size
        )
        self.schemas = {v: xsd.load_schema(v) for v in SPECS}
        self.naics = frozenset(settings.naics) or None
        self._today: Window | None = None
        self._window_until = 0.0  # time.monotonic() until which _today is still today

    def close(self) -> None:
        self.audit.close()
        self.gate.close()  # each pool thread closes its own connection
        self.store.close()
        if self.replica is not None:
            self.replica.close()
        self.engine.dispose()

    async def settle(
        self,
        request: etree._Element,
        endpoint_version: str | None,
        requester: Requester,
        started: float,
        bounded: bool = False,
    ) -> Settled:
        """Read and decide; the database part never holds the event loop past the deadline.
        ``bounded``: the request came from a document
        :func:`service.request.within_bounds` admits."""
        query, decision = self._read(request, endpoint_version, bounded)
        if decision is None:
            due = started + self.settings.deadline_seconds
            decision = await self.batch((query, requester.authorized), due)
        return Settled(request, query, decision)

    def answer(
        self,
        request: etree._Element,
        endpoint_version: str | None,
        requester: Requester,
        started: float,
        settled: Settled | None = None,
    ) -> response.Response:
        if settled is None or settled.request is not request:
            settled = self._settle_blocking(request, endpoint_version, requester, started)
        query, decision = settled.query, settled.decision
        if time.monotonic() - started > self.settings.deadline_seconds:
            decision = _SYSU
        body = self._build(request, query.version, decision, query)
        self._audit(query, requester, decision, started)
        return body

    def _settle_blocking(
        self,
        request: etree._Element,
        endpoint_version: str | None,
        requester: Requester,
        started: float,
    ) -> Settled:
        query, decision = self._read(request, endpoint_version)
        if decision is None:
            due = started + self.settings.deadline_seconds
            try:
                decision = self.gate.call(partial(self._decide, query, requester.authorized), due)
            except Exception as exc:  # noqa: BLE001 - SPEC: any failure answers SYSU, never a fault
                decision = _failed(exc)
        return Settled(request, query, decision)

    def _read(
        self, request: etree._Element, endpoint_version: str | None, bounded: bool = False
    ) -> tuple[CoverageQuery, Decision | None]:
        """The query, and the decision when it needs no database (maintenance, failure)."""
        found = elements(request, bounded)
        version = endpoint_version or detect(request, found)
        try:
            query = read(request, version, self.schemas[version], found, bounded)
        except Exception:  # noqa: BLE001 - SPEC: any internal failure answers SYSU, never a fault
            log.exception("reading the request failed; answering SYSU")
            return CoverageQuery(version), _SYSU
        if self.settings.maintenance:
            return query, _SYSU
        return query, None

    def _decide(
        self, query: CoverageQuery, authorized: bool, window: Window | None = None
    ) -> Decision:
        """Runs where the gate puts it: inline on the event loop, or on a database thread."""
        return decide(
            query,
            store=self.store,
            authorized=authorized,
            window=window or self._window(),
            maintenance=self.settings.maintenance,
            naics=self.naics,
        )

    def _decide_each(self, requests: Sequence[tuple[CoverageQuery, bool]]) -> list[Decision]:
        """:meth:`_decide` for a batch of (query, authorized), its reads shared."""
        if len(requests) == 1:  # the usual batch at light load: nothing to share
            return [self._decide(*requests[0])]
        if not self.store.shares_reads:
            # Each decided in turn, in one snapshot: the batch's steps decide each request
            # twice (once to learn its reads), and cost 17.5 µs a request against 10.9.
            return self.store.in_one_snapshot(partial(self._decide_in_turn, requests))
        return read_through(self._steps(requests), self.store)

    def _decide_in_turn(self, requests: Sequence[tuple[CoverageQuery, bool]]) -> list[Decision]:
        window = self._window()
        decisions: list[Decision] = []
        for query, authorized in requests:
            decision = self._decide(query, authorized, window)
            decisions.append(decision)
            if decision is not CONFIRMED and Code.SYSU in decision.codes:
                # The database failed, or the call was cut: the rest go unread, as a batch's
                # shared read that failed leaves them.
                return decisions + [decision] * (len(requests) - len(decisions))
        return decisions

    def _steps(self, requests: Sequence[tuple[CoverageQuery, bool]]) -> Steps:
        """:meth:`_decide_each` in steps between its reads (awaited on the loop, or not)."""
        return deciding(
            requests,
            store=self.store,
            window=self._window(),
            maintenance=self.settings.maintenance,
            naics=self.naics,
        )

    def _build(
        self, request: etree._Element, version: str, decision: Decision, query: CoverageQuery
    ) -> response.Response:
        body = response.build(request, version, decision.codes, found=query.found or None)
        unchecked = query.format_errors or not _UNCHECKED.isdisjoint(decision.codes)
        # A request that was not checked (or not valid) must still get a valid echo.
        if unchecked and not self.schemas[version].validate(body.element()):
            body = response.build(
                request, version, decision.codes, echo_requestor=False, found=query.found or None
            )
        return body

    def _window(self) -> Window:
        """Today's window, built once a day; the clock is read again only after the time its
        day has left in the service's zone has passed (a minute at most, for clock changes)."""
        window = self._today
        if window is not None and time.monotonic() < self._window_until:
            return window
        now = datetime.now(self.settings.zone)
        today = now.date()
        if window is None or window.today != today:
            window = Window(today, self.settings.verify_past_days, self.settings.verify_future_days)
            self._today = window
        midnight = datetime.combine(today + timedelta(days=1), dt_time(), now.tzinfo)
        left = (midnight - now).total_seconds()
        self._window_until = time.monotonic() + min(max(left, 0.0), _WINDOW_RECHECK_SECONDS)
        return window

    def _audit(
        self, query: CoverageQuery, requester: Requester, decision: Decision, started: float
    ) -> None:
        self.audit.record(
            AuditEntry(
                at=datetime.now(UTC),
                requester=requester.identity,
                version=query.version,
                naic=query.naic,
                policy_key=query.policy_key,
                vin=normalize.vin(query.vin) or None,
                verification_date=query.verification_date,
                request_reason=query.request_reason,
                response_code=decision.response_code,
                reason_codes=_reason_text(decision.codes),
                latency_ms=(time.monotonic() - started) * 1000.0,
            )
        )


def _failed(exc: Exception) -> Decision:
    if not isinstance(exc, StoreUnavailable):  # the database's own failures are expected
        log.error("verification failed; answering SYSU", exc_info=exc)
    return _SYSU


# The audit's text of each combination of reason codes (few: the decision table's answers).
_REASON_TEXTS: dict[tuple[Code, ...], str] = {}


def _reason_text(codes: tuple[Code, ...]) -> str:
    text = _REASON_TEXTS.get(codes)
    if text is None:
        text = _REASON_TEXTS[codes] = " ".join(c.value for c in codes)
    return text
