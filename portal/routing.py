"""Routing a query (SPEC §5 steps 1-5): one function, one result object.

:meth:`Router.verify` takes a :class:`~portal.schemas.VerifyRequest` and returns a
:class:`~portal.schemas.VerifyResult`; the API and the query page both render that object.

1. Plate → VIN through ``registrations`` (``plate_state`` optional when the plate is
   registered in one state only; an unknown plate is a 404).
2. ``naic`` + ``policy_number`` given (an ID card): ask that insurer with that key. Otherwise
   the VIN's current book-of-business records: ask each named insurer with the policy number
   on file, concurrently; the first Confirmed wins and the other calls are cancelled.
3. No record, or no record whose insurer is registered and enabled: broadcast ``UNKNOWN`` to
   every enabled insurer that accepts it; the first Confirmed wins.
4. An insurer that gives no usable answer in time is *unavailable*: Unconfirmed,
   ``unable_to_verify``, ``SYSU``, with the book-of-business evidence when a record exists.
5. Requests in the insurer's version; answers checked against our XSD (``insurer_client``).

Everything runs inside one budget (``OLV_PORTAL_BUDGET_SECONDS``) from the moment the request
arrived; each call gets the time left, less a small reserve for answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from olv import normalize
from olv.config import Settings
from olv.logging import describe_exception
from olv.read_replica import ReadReplica
from portal import metrics, querylog, state_reads
from portal.cache import TtlCache
from portal.deps import Principal
from portal.errors import ApiError, ErrorBody, FieldError
from portal.insurer_client import CallResult, InsurerClient, InsurerConfig
from portal.models import Insurer
from portal.querylog import QueryLogWriter, new_query_id
from portal.schemas import VerifyRequest, VerifyResult
from portal.settings import PortalSettings
from portal.soap_wire import Ask
from portal.verdicts import Plan, Target, compose, confirmed, judged, usable

UNKNOWN = normalize.UNKNOWN_POLICY_KEY
log = logging.getLogger(__name__)

REGISTRY_KEY = "enabled"
REGISTRY_REFRESH_AT = 0.8  # of the registry's cache life: re-read in the background from then


def _registry_read_ended(task: asyncio.Task[dict[str, InsurerConfig]]) -> None:
    """A background read that failed is logged (a request that waited on it answered 503)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("reading the insurer registry failed", extra=describe_exception(exc))


# Kept back from the budget for writing the answer, and for the time a request can spend
# queued before the application sees it when the machine is busy.
RESERVE_SECONDS = 0.5


@dataclass(frozen=True)
class Question:
    """A checked request: what to verify, on which day, why."""

    request: VerifyRequest
    vin: str | None
    plate: str | None
    plate_state: str | None
    day: date
    reason: str


def default_reason(role: str) -> str:
    """The request reason sent when none is given (the API's and the query page's default)."""
    return "VEHREG" if role == "dmv" else "VIOL"


def check(
    request: VerifyRequest, role: str, settings: Settings, prefix: str = ""
) -> Question | list[FieldError]:
    """The request's cross-field rules; field errors are named ``prefix + field``."""
    errors: list[FieldError] = []

    def bad(name: str, message: str) -> None:
        errors.append(FieldError(field=prefix + name, message=message))

    if request.vin is None and request.plate is None:
        bad("vin", "give vin or plate")
    if request.vin is not None and request.plate is not None:
        bad("plate", "give vin or plate, not both")
    if request.plate_state is not None and request.plate is None:
        bad("plate_state", "only with plate")
    if request.policy_number is not None and request.naic is None:
        bad("naic", "needed with policy_number")
    today = datetime.now(settings.zone).date()
    day = date.fromisoformat(request.date) if request.date else today
    if day > today:
        bad("date", "must not be in the future")
    elif day < today - timedelta(days=settings.verify_past_days):
        bad("date", f"at most {settings.verify_past_days} days back")
    if errors:
        return errors
    return Question(
        request=request,
        vin=normalize.vin(request.vin) if request.vin else None,
        plate=normalize.plate(request.plate) if request.plate else None,
        plate_state=request.plate_state.upper() if request.plate_state else None,
        day=day,
        reason=request.reason or default_reason(role),
    )


class Router:
    def __init__(
        self,
        engine: Engine,
        client: InsurerClient,
        query_log: QueryLogWriter,
        settings: Settings,
        portal_settings: PortalSettings,
        registry_seconds: float = 5.0,
        replica: ReadReplica | None = None,
    ) -> None:
        # Plain connections, not ORM sessions: a query only reads a few rows, and a session
        # costs about a third more CPU per query.
        self.engine = engine
        self.client = client
        self.query_log = query_log
        self.settings = settings
        self.portal = portal_settings
        # Re-read in the background once 4/5 of its life has passed, so that requests find it
        # fresh; when it is missing all the same, the requests share one read.
        self.registry_cache = TtlCache[str, dict[str, InsurerConfig]](
            registry_seconds, refresh_after=registry_seconds * REGISTRY_REFRESH_AT
        )
        self._registry_read: tuple[float, asyncio.Task[dict[str, InsurerConfig]]] | None = None
        self.reads = state_reads.StateReader(engine, portal_settings.budget_seconds, replica)

    async def open(self) -> None:
        await self.reads.open()

    async def close(self) -> None:
        if self._registry_read is not None:
            self._registry_read[1].cancel()
        await self.reads.close()

    # --- entry points --------------------------------------------------------------------

    async def verify(
        self,
        request: VerifyRequest,
        principal: Principal,
        channel: str,
        received: float,
        along: state_reads.RecordsAlong | None = None,
    ) -> VerifyResult:
        """Answer one request; raises :class:`ApiError` (422, 404) for what cannot be asked.
        ``along``: the VIN's records when the rate limit's statement already read them."""
        checked = check(request, principal.role, self.settings)
        if isinstance(checked, list):
            raise ApiError(422, "; ".join(f"{e.field}: {e.message}" for e in checked), checked)
        return await self._answer(checked, principal, channel, received, along)

    async def verify_batch(
        self, items: Sequence[VerifyRequest], principal: Principal
    ) -> list[VerifyResult | ErrorBody]:
        """Every item, in order; a whole batch with a bad item is refused (422) up front."""
        questions: list[Question] = []
        errors: list[FieldError] = []
        for index, item in enumerate(items):
            checked = check(item, principal.role, self.settings, prefix=f"items.{index}.")
            if isinstance(checked, list):
                errors.extend(checked)
            else:
                questions.append(checked)
        if errors:
            summary = "; ".join(f"{e.field}: {e.message}" for e in errors[:3])
            raise ApiError(422, summary, errors)
        slots = asyncio.Semaphore(self.portal.batch_concurrency)

        async def one(question: Question) -> VerifyResult | ErrorBody:
            async with slots:  # each item's budget starts when its turn comes
                try:
                    return await self._answer(question, principal, "batch", time.monotonic())
                except ApiError as exc:
                    return ErrorBody(status=exc.status, error=exc.error, errors=exc.errors)
                except Exception as exc:  # noqa: BLE001 - one item's bug must not sink 999 others
                    log.error("batch item failed", extra=describe_exception(exc))
                    return ErrorBody(status=500, error="internal error")

        return list(await asyncio.gather(*(one(q) for q in questions)))

    def deadline(self, received: float) -> float:
        """When a query that arrived at ``received`` must have its last answer from an insurer
        or the database (``time.monotonic()``)."""
        return received + self.portal.budget_seconds - RESERVE_SECONDS

    # --- the steps -------------------------------------------------------------------------

    async def _answer(
        self,
        question: Question,
        principal: Principal,
        channel: str,
        received: float,
        along: state_reads.RecordsAlong | None = None,
    ) -> VerifyResult:
        query_id = new_query_id()
        deadline = self.deadline(received)
        try:
            plan = await self._plan(question, deadline, along)
        except ApiError as exc:
            self._log(question, principal, channel, received, query_id, None, [], exc)
            raise
        calls: list[CallResult] = []
        batch = channel == "batch"
        if plan.targets:
            winner = await self._ask(plan.targets, question, plan, deadline, calls, batch)
        else:
            winner = None
        broadcast_targets: list[Target] = []
        if plan.broadcast:
            broadcast_targets = await self._broadcast_targets(deadline)
            winner = await self._ask(broadcast_targets, question, plan, deadline, calls, batch)
        result = compose(question.day, plan, calls, winner, received, query_id)
        self._log(question, principal, channel, received, query_id, result, calls, None)
        return result

    async def _plan(
        self, question: Question, deadline: float, along: state_reads.RecordsAlong | None = None
    ) -> Plan:
        insurers = await self._registry(deadline)
        if along is not None and along.records is not None and along.vin == question.vin:
            if time.monotonic() >= deadline:  # as a read given no time left would end
                raise state_reads.too_slow()
            vin, state, records = along.vin, None, along.records
        else:
            vin, state, records = await self.reads.vehicle(
                question.vin, question.plate, question.plate_state, deadline - time.monotonic()
            )
        plan = Plan(vin=vin, state=state, records=records)
        request = question.request
        if request.naic is not None and request.policy_number is not None:
            record = next((r for r in records if r["naic"] == request.naic), None)
            plan.records = [record] if record else []
            insurer = insurers.get(request.naic)
            if insurer is not None:
                plan.targets.append(Target(insurer, request.policy_number.strip(), record))
        else:
            if request.naic is not None:
                records = [r for r in records if r["naic"] == request.naic]
                plan.records = records
            seen: set[str] = set()  # one call per insurer: the first record of its NAIC
            for record in records:
                insurer = insurers.get(record["naic"])
                if insurer is not None and record["naic"] not in seen:
                    seen.add(record["naic"])
                    plan.targets.append(Target(insurer, record["policy_number"], record))
            if not records and request.naic in insurers:
                plan.targets.append(Target(insurers[request.naic], UNKNOWN, None))
        plan.broadcast = not plan.targets
        return plan

    async def _registry(self, deadline: float) -> dict[str, InsurerConfig]:
        """The enabled insurers by NAIC (cached for a few seconds: read on every query)."""
        insurers, due = self.registry_cache.lookup(REGISTRY_KEY)
        if insurers is not None:
            if due:
                self._read_registry()  # in the background: this request goes on with what it has
            return insurers
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                # Shielded: a request that gives up leaves the read to those who share it.
                return await asyncio.shield(self._read_registry())
        except TimeoutError:
            raise state_reads.too_slow() from None
        except SQLAlchemyError as exc:
            raise state_reads.unavailable() from exc

    def _read_registry(self) -> asyncio.Task[dict[str, InsurerConfig]]:
        """The registry read under way, or a new one. One at a time: when the cache ran out
        (at a start, or after a quiet spell) the requests of that moment each used to read it,
        and with a slow database each held a thread for as long. A read that has not ended
        within a request's budget (a hung connection) no longer holds up the next request,
        which starts another."""
        now = time.monotonic()
        under_way = self._registry_read
        if under_way is not None:
            started, task = under_way
            if not task.done() and now - started < self.portal.budget_seconds:
                return task
        self.registry_cache.claim_refresh(REGISTRY_KEY)
        task = asyncio.get_running_loop().create_task(self._registry_into_cache())
        task.add_done_callback(_registry_read_ended)
        self._registry_read = (now, task)
        return task

    async def _registry_into_cache(self) -> dict[str, InsurerConfig]:
        since = self.registry_cache.mark()
        try:
            insurers: dict[str, InsurerConfig] = await self.reads.in_thread(self._load_registry)
        except BaseException:
            self.registry_cache.release(REGISTRY_KEY)  # the next request due tries again
            raise
        under_way = self._registry_read
        if under_way is not None and under_way[1] is asyncio.current_task():
            self.registry_cache.put(REGISTRY_KEY, insurers, since)  # not once a newer read began
        return insurers

    def _load_registry(self) -> dict[str, InsurerConfig]:
        with Session(self.engine) as session:
            rows = session.scalars(select(Insurer).where(Insurer.enabled.is_(True)))
            return {row.naic: InsurerConfig.from_row(row) for row in rows}

    async def _broadcast_targets(self, deadline: float) -> list[Target]:
        insurers = await self._registry(deadline)
        return [
            Target(insurer, UNKNOWN, None)
            for naic, insurer in sorted(insurers.items())
            if insurer.accepts_unknown
        ]

    async def _ask(
        self,
        targets: list[Target],
        question: Question,
        plan: Plan,
        deadline: float,
        calls: list[CallResult],
        batch: bool = False,
    ) -> Target | None:
        """Ask every target at once; the first Confirmed wins and the rest are cancelled.
        A batch item's calls use the batches' share of each insurer's slots."""
        asks = [
            (
                target,
                Ask(
                    naic=target.insurer.naic,
                    policy_key=target.policy_key,
                    vin=plan.vin,
                    day=question.day,
                    reason=question.reason,
                    state=plan.state or self.portal.state,
                    requestor=self.portal.requestor,
                ),
            )
            for target in targets
        ]
        if len(asks) == 1:  # the usual case: one insurer on file, nothing to race or cancel
            target, ask = asks[0]
            timeout = deadline - time.monotonic()
            call = judged(await self.client.verify(target.insurer, ask, timeout, batch=batch))
            calls.append(call)
            return target if usable(call) and confirmed(call) else None
        tasks: dict[asyncio.Task[CallResult], Target] = {}
        for target, ask in asks:
            timeout = deadline - time.monotonic()
            task = asyncio.ensure_future(
                self.client.verify(target.insurer, ask, timeout, batch=batch)
            )
            tasks[task] = target
        pending = set(tasks)
        started = time.perf_counter()
        winner: Target | None = None
        try:
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    call = judged(task.result())
                    calls.append(call)
                    if winner is None and usable(call) and confirmed(call):
                        winner = tasks[task]
        finally:
            for task in pending:
                task.cancel()
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            for task in pending:
                calls.append(CallResult(tasks[task].insurer.naic, "cancelled", elapsed))
        return winner

    # --- the answer --------------------------------------------------------------------------

    def _log(
        self,
        question: Question,
        principal: Principal,
        channel: str,
        received: float,
        query_id: str,
        result: VerifyResult | None,
        calls: list[CallResult],
        error: ApiError | None,
    ) -> None:
        now = datetime.now(UTC)
        request = question.request
        row = querylog.new_row(
            id=query_id,
            at=now,
            username=principal.username,
            role=principal.role,
            channel=channel,
            vin=question.vin or (result.vin if result else None),
            plate=question.plate,
            plate_state=question.plate_state,
            naic=request.naic,
            policy_number=request.policy_number,
            verification_date=question.day,
            reason=question.reason,
            http_status=error.status if error else 200,
            status=result.status if result else None,
            verdict=result.verdict if result else None,
            reason_codes=" ".join(r.code for r in result.reasons) if result else "",
            answered_naic=result.naic if result else None,
            insurer=result.insurer if result else None,
            answered_policy_number=result.policy_number if result else None,
            source=result.source if result else None,
            error=error.error[:200] if error else None,
            latency_ms=round((time.monotonic() - received) * 1000, 2),
        )
        call_rows = [
            {
                "at": now,
                "naic": call.naic,
                "outcome": call.outcome,
                "response_code": call.answer.response_code if call.answer else None,
                "latency_ms": call.latency_ms,
                "query_id": query_id,
            }
            for call in calls
        ]
        self.query_log.add(row, call_rows)
        metrics.verified(row, call_rows)
        for call in calls:
            if call.outcome not in ("ok", "cancelled"):  # the line carries the request id
                log.warning(
                    "insurer call failed",
                    extra={
                        "naic": call.naic,
                        "outcome": call.outcome,
                        "latency_ms": call.latency_ms,
                    },
                )
