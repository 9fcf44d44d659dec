"""Dependencies shared by the routes, as ``Annotated`` aliases.

* ``DbSession``          a SQLAlchemy session for the request (closed afterwards)
* ``CurrentPrincipal``   who is asking: an ``Authorization: Bearer`` API token, else whatever
                         the resolvers in ``app.state.principal_resolvers`` find (the browser
                         pages add the session-cookie one there); 401 when nobody is found
* ``permitted(action)``  the principal, or 403 when :mod:`portal.permissions` does not give
                         their role the action; the aliases below are its uses here
* ``Verifier``           a principal allowed to verify vehicles (every role but ``insurer``)
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from olv import db
from olv.logging import describe_exception
from olv.serving import RECEIVED
from portal import permissions, tokens
from portal.cache import TtlCache
from portal.errors import DATABASE_DOWN, ApiError
from portal.failed_lookups import FailedLookups
from portal.permissions import Action
from portal.ratelimit import Bucket, SharedLimits, Taken
from portal.state_reads import RecordsAlong

log = logging.getLogger(__name__)
T = TypeVar("T")

# Threads that the database steps of requests anyone can send without signing in (sign-ins,
# the public case-status page) may hold at once, apart from the 40 of the server's shared
# limit: app.state.public_lane.
# Sent by the hundred, they wait in that lane's queue, not in the one that session and token
# checks share (300 sign-ins held every thread and all 30 pooled connections there, and a
# verification waited 2.5 s behind them). Two cores check fewer passwords than this at once
# (portal.passwords.HASH_SLOTS).
PUBLIC_THREADS = 6


@dataclass(frozen=True)
class Principal:
    user_id: int
    username: str
    role: str
    naic: str | None  # insurer liaisons only
    via: str  # "token" | "session"
    token_id: str | None = None


PrincipalResolver = Callable[[Request], Awaitable[Principal | None]]

# The scope's entry for the token and owner that :func:`bearer_known` found: the request's
# rate-limited look-up (:func:`principal_of`) takes that owner instead of asking the cache a
# second time, which could start a second background re-read of the same token.
KNOWN_OWNER = "olv.known_owner"


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


DbSession = Annotated[Session, Depends(get_db)]


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _authenticate(app: Any, token: str, source: str | None) -> tokens.TokenOwner | None:
    with app.state.sessions() as session, session.begin():
        return tokens.authenticate(session, token, source=source)


def received_at(request: Request) -> float:
    """When the request arrived (``time.monotonic()``): the server's protocol stamps it when
    the head is whole (:data:`olv.serving.RECEIVED`), else the request guard; the five-second
    budget counts from there. A request stamped by neither starts now."""
    received: float | None = getattr(request.state, RECEIVED, None)
    return received or time.monotonic()


def budget_left(request: Request) -> float:
    """Seconds the request may still wait (for the database, for a lock), never below zero: its
    budget from its arrival less the reserve a verification keeps for writing its answer
    (:meth:`portal.routing.Router.deadline`). Every request keeps that reserve, so that a hung
    database's 503 leaves within the five seconds, not just after them."""
    return _left_from(request, received_at(request))


def _left_from(request: Request, start: float) -> float:
    """Seconds left of a budget that began at ``start`` (``time.monotonic()``), less the
    reserve; never below zero."""
    deadline: float = request.app.state.router.deadline(start)
    return max(0.0, deadline - time.monotonic())


def refuse_when_late(request: Request) -> None:
    """408 for a request whose budget ran out before it could be checked: it took that long to
    arrive (a body sent over a slow link; one that drips is dropped by the server's body rules),
    or it waited behind earlier requests pipelined on its connection.
    Its first database statement would have had no time and its 503 would have blamed the
    database; nothing has been asked of it, so the answer says what happened instead, and
    nothing is logged as a failure. (A verification's budget runs from its arrival, SPEC §5.)"""
    if budget_left(request) > 0:
        return
    took = time.monotonic() - received_at(request)
    budget: float = request.app.state.portal_settings.budget_seconds
    log.info(
        "request waited too long to be read; answering 408",
        extra={"path": request.url.path, "seconds": round(took, 2)},
    )
    raise ApiError(
        408,
        f"the request waited {took:.1f} s before it could be read (a slow upload, or earlier"
        f" requests ahead of it on its connection), too long for its {budget:g}-second"
        " budget; it was not checked: send it again",
    )


async def within_budget(
    request: Request, call: Callable[..., T], *args: Any, lane: CapacityLimiter | None = None
) -> T:
    """``call(*args)`` on a worker thread (one of ``lane``'s, when given), given up with 503
    when the request's budget is spent: a hung state database must not hold a sign-in or a
    query past the five seconds. A lost connection (a pooler or server that closed it) is a
    503 too, not an error of the portal: the pool opens a new one for the next request."""
    try:
        async with asyncio.timeout(budget_left(request)):
            return await to_thread.run_sync(call, *args, limiter=lane)
    except TimeoutError:
        raise ApiError(503, "the state database did not answer in time; try again") from None
    except DBAPIError as exc:
        if not db.is_connection_failure(exc):
            raise
        raise ApiError(503, "the state database is unavailable; try again") from exc


async def _authenticate_within_budget(request: Request, token: str) -> tokens.TokenOwner | None:
    return await within_budget(request, _authenticate, request.app, token, client_address(request))


def _recheck_later(request: Request, token: str) -> None:
    """Re-read a cached token in the background (:mod:`portal.cache`), so that a token in
    steady use never makes a request wait for that read and its use is still recorded about
    once a minute. The re-reads take turns on one thread (``app.state.recheck_lane``): run
    all at once, the tokens cached together after a start held the threads and the
    interpreter every half minute, and the requests of that moment waited behind them.
    Revocation does not wait for them: see :func:`_still_valid`."""
    app, source = request.app, client_address(request)
    cache = app.state.token_cache
    cache.claim_refresh(token)
    since = cache.mark()

    async def recheck() -> None:
        try:
            owner = await to_thread.run_sync(
                _authenticate, app, token, source, limiter=app.state.recheck_lane
            )
        except Exception as exc:  # noqa: BLE001 - the entry expires; a request then meets it
            log.warning("background token re-check failed", extra=describe_exception(exc))
            return
        if owner is None:
            cache.drop(token)
        else:
            cache.put(token, owner, since)

    task = asyncio.get_running_loop().create_task(recheck())
    app.state.background_tasks.add(task)  # a strong reference until it ends
    task.add_done_callback(app.state.background_tasks.discard)


_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


# Declares the scheme in the OpenAPI document (the /docs "Authorize" button); the header is
# read by current_principal itself, so that every failure gets the one error shape.
bearer_scheme = HTTPBearer(auto_error=False, description="an API token from olv tokens create")


async def current_principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> Principal:
    return await principal_of(request)


async def principal_of(request: Request, along: RecordsAlong | None = None) -> Principal:
    """:func:`current_principal`; an API token's rate-limit statement also reads ``along``'s
    records (:meth:`portal.ratelimit.SharedLimits.take`)."""
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    # Before any database work: a request whose body took its whole budget to arrive is told
    # so, not that the database did not answer.
    refuse_when_late(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _space, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "use Authorization: Bearer <token>", headers=_UNAUTHORIZED)
        principal = await _token_principal(request, token.strip(), along)
    else:
        resolved: Principal | None = None
        for resolve in request.app.state.principal_resolvers:
            resolved = await resolve(request)
            if resolved is not None:
                break
        if resolved is None:
            raise ApiError(401, headers=_UNAUTHORIZED)
        principal = resolved
        _refuse_when_over(await _take(request, principal), principal)
    request.state.principal = principal
    return principal


async def bearer_known(request: Request) -> None:
    """401 unless the request carries a bearer token of a known owner (this process's cache or
    the database); nothing is counted against a rate limit. For a path that must refuse a
    request without a valid token before it reads the body (:mod:`portal.verify_path`); the
    owner is left in the scope (``KNOWN_OWNER``) for :func:`principal_of`."""
    scheme, _space, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "use Authorization: Bearer <token>", headers=_UNAUTHORIZED)
    token = token.strip()
    request.scope[KNOWN_OWNER] = (token, await _token_owner(request, token))


async def _token_owner(request: Request, token: str) -> tokens.TokenOwner:
    """The token's owner, from this process's cache or the database; 401 when none."""
    cache: TtlCache[str, tokens.TokenOwner] = request.app.state.token_cache
    owner, due = cache.lookup(token)
    if owner is not None and owner.expired(datetime.now(UTC)):
        cache.drop(token)
        owner = None
    if owner is None:
        owner = await _authenticate_into_cache(request, token)
    elif due:
        _recheck_later(request, token)
    if owner is None:
        raise ApiError(401, "invalid, expired or revoked token", headers=_UNAUTHORIZED)
    return owner


async def _token_principal(
    request: Request, token: str, along: RecordsAlong | None = None
) -> Principal:
    """The token's owner, from this process's cache or the database, checked against the
    shared version of who the tokens are, then counted against its rate limit."""
    app = request.app
    seen: int = app.state.auth_version  # what the cache holds is true as of this version
    known = request.scope.get(KNOWN_OWNER)
    if known is not None and known[0] == token:
        owner = known[1]
    else:
        owner = await _token_owner(request, token)
    taken = await _take(request, _as_principal(owner), along=along)
    if taken.version != seen:
        owner = await _still_valid(request, token, taken.version)
    principal = _as_principal(owner)
    _refuse_when_over(taken, principal)
    return principal


async def _authenticate_into_cache(
    request: Request, token: str, known: bool = False
) -> tokens.TokenOwner | None:
    """The token's owner read from the database into this process's cache; None when there is
    none. A token that was not ``known`` (cached) counts against its address when it fails,
    and is refused with 429 once the address has failed too often (:mod:`portal.failed_lookups`)."""
    if not tokens.well_shaped(token):
        return None  # no read to spare: refused as it is
    cache = request.app.state.token_cache
    address = client_address(request)
    failures: FailedLookups = request.app.state.failed_lookups
    if not known:
        failures.refuse_when_over(address)
    since = cache.mark()  # before the read: a change made meanwhile voids what it stores
    owner = await _authenticate_within_budget(request, token)
    if owner is not None:
        cache.put(token, owner, since)
    elif not known:
        failures.failed(address)
    return owner


async def _still_valid(request: Request, token: str, version: int) -> tokens.TokenOwner:
    """A token or a person changed since this process last looked (a revocation, a disable,
    a new role, made by any process or the command line): forget every cached token and read
    this one afresh. The version rides on the rate-limit statement every request makes, so a
    change reaches every process with its next request."""
    app = request.app
    if version > app.state.auth_version:
        app.state.auth_version = version
        app.state.token_cache.clear()
    owner = await _authenticate_into_cache(request, token, known=True)
    if owner is None:
        raise ApiError(401, "invalid, expired or revoked token", headers=_UNAUTHORIZED)
    return owner


def _as_principal(owner: tokens.TokenOwner) -> Principal:
    return Principal(owner.user_id, owner.username, owner.role, owner.naic, "token", owner.token_id)


def _rate_key(principal: Principal) -> tuple[str, str]:
    """Each API token, and each account signed in on the pages, has its own rate limit."""
    if principal.token_id is not None:
        return f"token:{principal.token_id}", "token"
    return f"account:{principal.user_id}", "account"


async def _take(
    request: Request,
    principal: Principal,
    cost: float = 1.0,
    along: RecordsAlong | None = None,
    seconds: float | None = None,
) -> Taken:
    """Count ``cost`` requests against the principal's limit, in the database every portal
    process shares; 503 when it does not answer within ``seconds`` (by default what is left of
    the request's budget, :func:`budget_left`). The limit fails closed: the same statement
    tells whether cached tokens still stand, and a portal whose database does not answer could
    not answer the query either."""
    key, _ = _rate_key(principal)
    limits: SharedLimits = request.app.state.rate_limits
    wait = budget_left(request) if seconds is None else seconds
    try:
        bucket = request.app.state.request_bucket
        return await limits.take(bucket, key, cost, wait, along)
    except ApiError as exc:
        if exc.status != 503:
            raise
        # Said apart from a 503 of the query itself: nothing was asked, nothing was logged.
        raise ApiError(503, DATABASE_DOWN, headers={"Retry-After": "1"}) from exc


def _refuse_when_over(taken: Taken, principal: Principal) -> None:
    if taken.wait:
        _, what = _rate_key(principal)
        retry = {"Retry-After": str(math.ceil(taken.wait))}
        raise ApiError(429, f"rate limit for this {what} reached", headers=retry)


async def charge_items(request: Request, principal: Principal, items: int) -> None:
    """A batch of ``items`` vehicles counts as ``items`` requests against the rate limit (the
    request that carried it is already counted as one); 429 saying why when fewer are left."""
    bucket: Bucket = request.app.state.request_bucket
    _, what = _rate_key(principal)
    if items > bucket.capacity:
        raise ApiError(
            429,
            f"a batch of {items} items is more than this {what} may send at once "
            f"({int(bucket.capacity)}); send smaller batches",
        )
    extra = items - 1
    if extra <= 0:
        return
    # The batch is in (its items are counted once it is read): its items have budgets of their
    # own, from their turns, so this statement waits as a request would from now, not from the
    # batch's arrival. An upload slower than the budget would otherwise always fail here, told
    # that the database was down.
    taken = await _take(request, principal, extra, seconds=_left_from(request, time.monotonic()))
    if taken.wait:
        wait = math.ceil(taken.wait)
        raise ApiError(
            429,
            f"a batch of {items} items counts as {items} requests and this {what} has "
            f"{taken.left + 1} left in its rate limit; retry after {wait} s",
            headers={"Retry-After": str(wait)},
        )


async def paced_items(request: Request, principal: Principal, items: int) -> None:
    """Wait until ``items`` more requests fit in the principal's rate limit, then count them:
    a long batch on the pages goes at the rate limit's pace instead of around it."""
    bucket: Bucket = request.app.state.request_bucket
    key, _ = _rate_key(principal)
    limits: SharedLimits = request.app.state.rate_limits
    budget = request.app.state.portal_settings.budget_seconds
    cost = min(items, bucket.capacity)
    while (taken := await limits.take(bucket, key, cost, budget)).wait:
        await asyncio.sleep(taken.wait)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(action: Action, principal: Principal) -> Principal:
    """The principal, or 403 when their role may not do ``action``."""
    if not action.allows(principal.role):
        raise ApiError(403, f"the {principal.role} role may not do this")
    return principal


def permitted(action: Action) -> Any:
    """``Annotated[Principal, permitted(permissions.VERIFY)]``: 403 for a role the table does
    not give the action. The check carries its action, so the tests can read, for every route,
    which action guards it."""

    async def check(principal: CurrentPrincipal) -> Principal:
        return require(action, principal)

    check.action = action  # type: ignore[attr-defined]
    return Depends(check)


Verifier = Annotated[Principal, permitted(permissions.VERIFY)]
BatchVerifier = Annotated[Principal, permitted(permissions.VERIFY_BATCH)]
QueryReader = Annotated[Principal, permitted(permissions.READ_QUERIES)]
BobViewer = Annotated[Principal, permitted(permissions.BOOK_OF_BUSINESS)]
ComplianceViewer = Annotated[Principal, permitted(permissions.COMPLIANCE)]
InsurerAdmin = Annotated[Principal, permitted(permissions.MANAGE_INSURERS)]
UserAdmin = Annotated[Principal, permitted(permissions.MANAGE_USERS)]
TokenAdmin = Annotated[Principal, permitted(permissions.MANAGE_TOKENS)]
