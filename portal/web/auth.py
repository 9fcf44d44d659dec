"""Signing in and out: password, then the TOTP second factor (enrolled at the first login).

Flow: ``POST /login`` checks the password and opens a ``password``-stage session; a person
without a second factor goes to ``/login/enrol`` (QR code, then a code from the app), everyone
else to ``/login/totp``; a right code replaces the session by a full one. Failed passwords and
failed codes both count towards the lockout (:mod:`portal.lockout`), each counted before it is
checked, and every step is written to the security log.

``POST /login`` runs on the event loop and waits for a password-hash slot
(``app.state.hash_slots``) with ``await``. Its first database step, the per-address and
per-name limits, takes a thread of the public lane (``app.state.public_lane``,
:data:`portal.deps.PUBLIC_THREADS`): anyone can send sign-ins by the hundred, and a flood of
them waits in that lane's queue, not in the one that session and token checks share. The
steps after it (the account's count, the outcome's record) are as few as the limits let
through and take the shared threads, so that an attempt already counted never queues behind
new ones (a right password recorded too late would stay counted as a failure). Past the
per-address limit (shared by every process, :mod:`portal.lockout`) it is refused before any
hash; a sign-in that gets no slot within the request's budget is answered 503 (try again)
and its attempt is uncounted.

Every database step of these pages ends within the request's budget (:mod:`portal.bounded_db`:
a row lock, SQLite's write lock or a hung state database answers 503 with ``Retry-After``),
and a sign-in holds its hash slot for the hash alone: attempts stuck on the database (say on
a row lock someone holds on their account) hold none of the slots other people need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

from fastapi import APIRouter, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import lockout, passwords, security_log, sessions, totp
from portal.bounded_db import RETRY_AFTER, deadline, in_budget, run_step, run_step_on
from portal.deps import client_address
from portal.errors import ApiError
from portal.models import User
from portal.web.identity import (
    COOKIE,
    clear_cookie,
    cookie_read,
    cookie_unread,
    now,
    resolve_session,
    set_cookie,
)
from portal.web.render import flash, home_for, page

T = TypeVar("T")
P = ParamSpec("P")
router = APIRouter(include_in_schema=False)

BAD_LOGIN = "Wrong user name or password."
LOCKED = (
    "This account is locked after too many failed sign-ins. "
    "An administrator can unlock it (olv users unlock)."
)
DISABLED = "This account is disabled."
SLOW_DOWN = "Too many sign-in attempts for this account; wait a minute and try again."
SLOW_DOWN_HERE = "Too many sign-in attempts from your address; wait a minute and try again."
WRONG_CODE = "That code is not right; try again."
BUSY = "Too many sign-ins at once; try again in a moment."
# The share of a sign-in's budget kept, after its wait for a hash slot, for the hash and for
# recording its outcome (1 s of the usual 5).
SETTLE_SHARE = 0.2


@dataclass(frozen=True)
class _Who:
    """One sign-in attempt, as the security log records it."""

    logged_name: str  # the account name, or the keyed hash of a name that is no account
    source: str | None
    at: datetime

    def log(self, db: Session, event: str, detail: str = "") -> None:
        security_log.record(
            db, event, username=self.logged_name, detail=detail, source=self.source, at=self.at
        )


@dataclass(frozen=True)
class _Refusal:
    message: str
    status: int


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    principal = await resolve_session(request)
    return _redirect(home_for(principal.role) if principal else "/login")


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    principal = await resolve_session(request)
    if principal is not None:
        return _redirect(home_for(principal.role))
    return page(request, "login.html", "Sign in")


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    app, at, source = request.app, now(request), client_address(request)
    username = username.strip()
    ends = deadline(request)
    found = await run_step_on(
        app.state.public_lane, app, ends, _before_hash, app, username, source, at
    )
    if isinstance(found, _Refusal):
        return _refused(request, username, found)
    # Once counted, an attempt is seen through to its recorded outcome, even if the client
    # gives up: a counted attempt left unsettled would neither lock nor uncount. Each of its
    # steps still ends by the deadline.
    opened = await asyncio.shield(_check(app, ends, *found, password))
    if isinstance(opened, _Refusal):
        return _refused(request, username, opened)
    token, enrolled = opened
    response = _redirect("/login/totp" if enrolled else "/login/enrol")
    set_cookie(request, response, token)
    return response


async def _check(
    app: Any, ends: float, who: _Who, user_id: int | None, stored_hash: str, password: str
) -> tuple[str, bool] | _Refusal:
    """Count the attempt, check the password on a hash slot, record the outcome, by ``ends``.
    The slot is taken only once the attempt is counted: a count waiting on the database (a
    row lock on the account) holds no slot. An outcome the database does not take in time
    (503) leaves the attempt counted as a failure, the side a lockout errs on."""
    number = 0
    if user_id is not None:
        claimed = await run_step(app, ends, _claim, who, user_id)
        if isinstance(claimed, _Refusal):
            return claimed
        number = claimed
    # The end of the budget is kept for the hash and the outcome's record: a sign-in that
    # got its slot so late would be checked and then could not be recorded in time. Known
    # and unknown names wait alike (the time must not tell which names are accounts).
    settle = SETTLE_SHARE * app.state.portal_settings.budget_seconds
    try:
        right = await _hash(app, stored_hash, password, ends - settle)
    except ApiError:
        if user_id is not None:
            # No slot in time: never checked, so it does not count (as if refused before
            # its count). Should the database fail this too, it stays counted as a failure.
            with suppress(ApiError):
                await run_step(app, ends, lockout.release_attempt, user_id)
        raise
    return await run_step(app, ends, _after_hash, who, user_id, number, right)


def _refused(request: Request, username: str, refusal: _Refusal) -> Response:
    flash(request, "error", refusal.message)
    return page(request, "login.html", "Sign in", {"username": username}, status=refusal.status)


async def _hash(app: Any, stored_hash: str, password: str, until: float) -> bool:
    """The password checked on one of the process's hash slots, waited for until ``until``
    (``time.monotonic()``), then 503 (try again); the slot is held for the hash alone."""
    async with _hash_slot(app, until):
        return await passwords.verify_password_async(stored_hash, password)


@asynccontextmanager
async def _hash_slot(app: Any, until: float) -> AsyncIterator[None]:
    slots: asyncio.Semaphore = app.state.hash_slots
    try:
        async with asyncio.timeout(max(0.0, until - time.monotonic())):
            await slots.acquire()
    except TimeoutError:
        raise ApiError(503, BUSY, headers=RETRY_AFTER) from None
    try:
        yield
    finally:
        slots.release()


def _before_hash(
    db: Session, app: Any, username: str, source: str | None, at: datetime
) -> tuple[_Who, int | None, str] | _Refusal:
    """The rate limits and the account; returns who is trying, their account's id (None for
    a name that is no account) and the hash to check the password against."""
    if not lockout.attempt_from(db, source, at):
        return _Refusal(SLOW_DOWN_HERE, 429)
    user = db.scalar(select(User).where(User.username == username))
    logged = username if user else security_log.unknown_name(app.state.secret_key.tag(username))
    who = _Who(logged, source, at)
    if not lockout.attempt_for(db, logged, at):
        return _Refusal(SLOW_DOWN, 429)
    if user is None:
        # A name that does not exist "locks" like one that does, so that the lockout
        # message (and the time it takes) does not tell which names are accounts.
        if lockout.unknown_name_failures(db, logged, at) >= lockout.MAX_FAILURES:
            who.log(db, security_log.LOGIN_FAILED, security_log.UNKNOWN_USER)
            return _Refusal(LOCKED, 401)
        return who, None, passwords.dummy_hash()  # checked to take the time a real one does
    if lockout.is_locked(user):
        who.log(db, security_log.LOGIN_REFUSED, "account locked")
        return _Refusal(LOCKED, 401)
    return who, user.id, user.password_hash


def _claim(db: Session, who: _Who, user_id: int) -> int | _Refusal:
    """Count this attempt before its password is checked (committed at once, so the hash
    holds no lock); a refusal when the account is locked or has its limit in flight."""
    number = lockout.claim_attempt(db, user_id, who.at)
    if number is not None:
        return number
    if lockout.is_locked_now(db, user_id):
        who.log(db, security_log.LOGIN_REFUSED, "account locked")
        return _Refusal(LOCKED, 401)
    who.log(db, security_log.LOGIN_REFUSED, "too many sign-ins at once")
    return _Refusal(SLOW_DOWN, 429)


def _after_hash(
    db: Session, who: _Who, user_id: int | None, number: int, right: bool
) -> tuple[str, bool] | _Refusal:
    """Record the outcome; the new session's token and whether a second factor is enrolled."""
    if user_id is None:
        who.log(db, security_log.LOGIN_FAILED, security_log.UNKNOWN_USER)
        failures = lockout.unknown_name_failures(db, who.logged_name, who.at)
        return _Refusal(LOCKED if failures >= lockout.MAX_FAILURES else BAD_LOGIN, 401)
    if not right:
        return _Refusal(_failed(db, who, user_id, number, security_log.LOGIN_FAILED), 401)
    lockout.release_attempt(db, user_id)
    user = db.get(User, user_id)
    if user is None or lockout.is_locked(user):  # gone, or locked by a racing attempt
        who.log(db, security_log.LOGIN_REFUSED, "account locked")
        return _Refusal(LOCKED, 401)
    if user.disabled:
        who.log(db, security_log.LOGIN_REFUSED, "account disabled")
        return _Refusal(DISABLED, 401)
    sessions.purge_expired(db, who.at)  # housekeeping: sign-ins are rare enough to carry it
    token = sessions.create(db, user.id, sessions.STAGE_PASSWORD, who.at)
    return token, user.totp_enrolled


def _failed(db: Session, who: _Who, user_id: int, number: int, event: str) -> str:
    """Log a failed password or code (already counted by :func:`lockout.claim_attempt`),
    lock the account when it was the last one allowed; the message to show."""
    what = "wrong password" if event == security_log.LOGIN_FAILED else "wrong code"
    who.log(db, event, f"{what} ({number} in 15 minutes)")
    if lockout.lock_if_due(db, user_id, who.at):
        who.log(db, security_log.LOGIN_LOCKED_OUT, f"{lockout.MAX_FAILURES} failed sign-ins")
        sessions.end_all(db, user_id)
        return LOCKED
    if lockout.is_locked_now(db, user_id):
        return LOCKED
    return BAD_LOGIN if event == security_log.LOGIN_FAILED else WRONG_CODE


def _pending(db: Session, request: Request) -> tuple[sessions.Current, User] | None:
    """The half-open (password-only) session of this browser and its person."""
    current = sessions.load(db, request.cookies.get(COOKIE), now(request))
    if current is None or current.stage != sessions.STAGE_PASSWORD:
        return None
    user = db.get(User, current.user_id)
    if user is None or user.disabled or lockout.is_locked(user):
        sessions.end(db, current.token)
        return None
    return current, user


async def _on_pending(
    request: Request,
    work: Callable[Concatenate[Session, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T | None:
    """``work`` (a read of this browser's half-open session) in the request's budget; None,
    without a read, for a cookie its address may no longer have looked up (as the signed-in
    pages treat it: :func:`portal.web.identity.resolve_session`)."""
    if cookie_unread(request):
        return None
    result = await in_budget(request, work, *args, **kwargs)
    cookie_read(request, found=result is not None)
    return result


@router.get("/login/totp", response_class=HTMLResponse)
async def totp_form(request: Request) -> Response:
    pending = await _on_pending(request, _pending, request)
    if pending is None or not pending[1].totp_enrolled:
        return _redirect("/login")
    return page(request, "totp_verify.html", "Second factor")


@router.get("/login/enrol", response_class=HTMLResponse)
async def enrol_form(request: Request) -> Response:
    return await _enrol_page(request, 200)


async def _enrol_page(request: Request, status: int) -> Response:
    shown = await _on_pending(request, _enrol_secret, request)
    if shown is None:
        return _redirect("/login")
    secret, username = shown
    uri = totp.provisioning_uri(secret, username)
    svg = await run_in_threadpool(totp.qr_svg, uri)  # milliseconds of work: not on the loop
    return page(
        request,
        "totp_enrol.html",
        "Set up your second factor",
        {"secret": secret, "provisioning_uri": uri},
        {"qr_svg": Markup(svg)},  # segno's own markup
        status=status,
    )


def _enrol_secret(db: Session, request: Request) -> tuple[str, str] | None:
    """The secret to show the person enrolling (and their name); None when this browser has
    no enrolment under way."""
    pending = _pending(db, request)
    if pending is None or pending[1].totp_enrolled:
        return None
    current, user = pending
    key = request.app.state.secret_key
    if current.enrol_secret is None:
        secret = totp.new_secret()
        sessions.set_enrol_secret(db, current.token, key.seal(secret))
    else:
        secret = key.unseal(current.enrol_secret)
    return secret, user.username


@router.post("/login/totp", response_class=HTMLResponse)
async def totp_verify(request: Request, code: Annotated[str, Form(max_length=20)] = "") -> Response:
    return await _second_factor(request, code, enrolling=False)


@router.post("/login/enrol", response_class=HTMLResponse)
async def enrol(request: Request, code: Annotated[str, Form(max_length=20)] = "") -> Response:
    return await _second_factor(request, code, enrolling=True)


@dataclass(frozen=True)
class _SignedIn:
    """A right code: the full session's token, and the person's role."""

    token: str
    role: str


async def _second_factor(request: Request, code: str, *, enrolling: bool) -> Response:
    checked = await _on_pending(request, _check_code, request, code, enrolling)
    if checked is None:
        return _redirect("/login")
    response: Response
    if isinstance(checked, _SignedIn):
        response = _redirect(home_for(checked.role))
        set_cookie(request, response, checked.token)
        return response
    problem = checked
    flash(request, "error", problem)
    if problem == LOCKED:
        response = page(request, "login.html", "Sign in", status=401)
        clear_cookie(request, response)
        return response
    if enrolling:
        return await _enrol_page(request, 401)
    return page(request, "totp_verify.html", "Second factor", status=401)


def _check_code(
    db: Session, request: Request, code: str, enrolling: bool
) -> _SignedIn | str | None:
    """Check a code in one transaction: the attempt is counted first (on PostgreSQL its row
    lock makes racing codes of one person wait their turn), then the code is checked. The
    new session, or the problem to show; None when this browser has no second factor under
    way."""
    at, key = now(request), request.app.state.secret_key
    pending = _pending(db, request)
    if pending is None or pending[1].totp_enrolled == enrolling:
        return None
    current, user = pending
    who = _Who(user.username, client_address(request), at)
    if not lockout.attempt_for(db, user.username, at):
        return SLOW_DOWN
    number = lockout.claim_attempt(db, user.id, at)
    if number is None:
        problem = LOCKED if lockout.is_locked_now(db, user.id) else SLOW_DOWN
        why = "account locked" if problem == LOCKED else "too many sign-ins at once"
        who.log(db, security_log.LOGIN_REFUSED, why)
        return problem
    sealed = current.enrol_secret if enrolling else user.totp_secret
    secret = key.unseal(sealed) if sealed else None
    last = sessions.last_totp_step(db, user.id)
    step = totp.matching_step(secret, code, at, last) if secret else None
    if secret is None or step is None or not sessions.claim_totp_step(db, user.id, step):
        return _failed(db, who, user.id, number, security_log.TOTP_FAILED)
    if enrolling:
        user.totp_secret = key.seal(secret)
        user.totp_enrolled = True
        who.log(db, security_log.TOTP_ENROLLED)
    elif sealed is not None and sealed == secret:  # stored before encryption
        user.totp_secret = key.seal(secret)
    lockout.clear_failures(db, user.id)
    user.last_login_at = at
    who.log(db, security_log.LOGIN_OK)
    return _SignedIn(sessions.promote(db, current, at), user.role)


@router.post("/logout")
async def logout(request: Request) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        await in_budget(request, _end_session, request, token)
    response = _redirect("/login")
    clear_cookie(request, response)
    return response


def _end_session(db: Session, request: Request, token: str) -> None:
    current = sessions.load(db, token, now(request))
    if current is not None:
        user = db.get(User, current.user_id)
        sessions.end(db, token)
        if user is not None:
            _Who(user.username, client_address(request), now(request)).log(db, security_log.LOGOUT)
