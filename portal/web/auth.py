"""Signing in and out: password, then the TOTP second factor (enrolled at the first login).

Flow: ``POST /login`` checks the password and opens a ``password``-stage session; a person
without a second factor goes to ``/login/enrol`` (QR code, then a code from the app), everyone
else to ``/login/totp``; a right code replaces the session by a full one. Failed passwords and
failed codes both count towards the lockout (:mod:`portal.web.lockout`), and every step is
written to the security log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import passwords, security_log, sessions, totp
from portal.deps import DbSession, client_address
from portal.models import User
from portal.web import lockout
from portal.web.identity import COOKIE, clear_cookie, now, resolve_session, set_cookie
from portal.web.render import flash, home_for, page

router = APIRouter(include_in_schema=False)

BAD_LOGIN = "Wrong user name or password."
LOCKED = (
    "This account is locked after too many failed sign-ins. "
    "An administrator can unlock it (olv users unlock)."
)
DISABLED = "This account is disabled."
SLOW_DOWN = "Too many sign-in attempts for this account; wait a minute and try again."
SLOW_DOWN_HERE = "Too many sign-in attempts from your address; wait a minute and try again."


def _log(db: Session, request: Request, event: str, username: str, detail: str = "") -> None:
    security_log.record(
        db, event, username=username, detail=detail, source=client_address(request), at=now(request)
    )


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
def login(
    request: Request,
    db: DbSession,
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    at = now(request)
    username = username.strip()
    with db.begin():
        if lockout.too_many_from(db, client_address(request), at):
            flash(request, "error", SLOW_DOWN_HERE)
            return page(request, "login.html", "Sign in", {"username": username}, status=429)
        if lockout.too_many_attempts(db, username, at):
            flash(request, "error", SLOW_DOWN)
            return page(request, "login.html", "Sign in", {"username": username}, status=429)
        user = db.scalar(select(User).where(User.username == username))
        problem = _check_password(db, request, user, username, password)
        if problem is not None:
            flash(request, "error", problem)
            return page(request, "login.html", "Sign in", {"username": username}, status=401)
        assert user is not None
        sessions.purge_expired(db, at)  # housekeeping: sign-ins are rare enough to carry it
        token = sessions.create(db, user.id, sessions.STAGE_PASSWORD, at)
    response = _redirect("/login/totp" if user.totp_enrolled else "/login/enrol")
    set_cookie(request, response, token)
    return response


def _check_password(
    db: Session, request: Request, user: User | None, username: str, password: str
) -> str | None:
    """Why this password does not open the account (all logged), or None when it does."""
    if user is None:
        passwords.verify_password(passwords.dummy_hash(), password)  # same time as a real one
        _log(db, request, lockout.LOGIN_FAILED, username, lockout.UNKNOWN_USER)
        # A name that does not exist "locks" like one that does, so that the lockout message
        # does not tell which names are accounts.
        if lockout.unknown_name_failures(db, username, now(request)) >= lockout.MAX_FAILURES:
            return LOCKED
        return BAD_LOGIN
    if lockout.is_locked(user):
        passwords.verify_password(passwords.dummy_hash(), password)  # same time as the others
        _log(db, request, lockout.LOGIN_REFUSED, username, "account locked")
        return LOCKED
    if not passwords.verify_password(user.password_hash, password):
        return _count_failure(db, request, user, lockout.LOGIN_FAILED, "wrong password")
    if user.disabled:
        _log(db, request, lockout.LOGIN_REFUSED, username, "account disabled")
        return DISABLED
    return None


def _count_failure(db: Session, request: Request, user: User, event: str, detail: str) -> str:
    locked = lockout.record_failure(user, now(request))
    _log(db, request, event, user.username, f"{detail} ({user.failed_logins} in 15 minutes)")
    if locked:
        _log(db, request, lockout.LOGIN_LOCKED_OUT, user.username, "5 failed sign-ins")
        sessions.end_all(db, user.id)
        return LOCKED
    return BAD_LOGIN if event == lockout.LOGIN_FAILED else "That code is not right; try again."


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


@router.get("/login/totp", response_class=HTMLResponse)
def totp_form(request: Request, db: DbSession) -> Response:
    with db.begin():
        pending = _pending(db, request)
    if pending is None or not pending[1].totp_enrolled:
        return _redirect("/login")
    return page(request, "totp_verify.html", "Second factor")


@router.get("/login/enrol", response_class=HTMLResponse)
def enrol_form(request: Request, db: DbSession) -> Response:
    return _enrol_page(request, db, 200)


def _enrol_page(request: Request, db: Session, status: int) -> Response:
    with db.begin():
        pending = _pending(db, request)
        if pending is None or pending[1].totp_enrolled:
            return _redirect("/login")
        current, user = pending
        secret = current.enrol_secret
        if secret is None:
            secret = totp.new_secret()
            sessions.set_enrol_secret(db, current.token, secret)
    uri = totp.provisioning_uri(secret, user.username)
    return page(
        request,
        "totp_enrol.html",
        "Set up your second factor",
        {"secret": secret, "provisioning_uri": uri},
        {"qr_svg": Markup(totp.qr_svg(uri))},  # segno's own markup
        status=status,
    )


@router.post("/login/totp", response_class=HTMLResponse)
def totp_verify(
    request: Request, db: DbSession, code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    return _second_factor(request, db, code, enrolling=False)


@router.post("/login/enrol", response_class=HTMLResponse)
def enrol(
    request: Request, db: DbSession, code: Annotated[str, Form(max_length=20)] = ""
) -> Response:
    return _second_factor(request, db, code, enrolling=True)


def _second_factor(request: Request, db: DbSession, code: str, *, enrolling: bool) -> Response:
    at = now(request)
    with db.begin():
        pending = _pending(db, request)
        if pending is None or pending[1].totp_enrolled == enrolling:
            return _redirect("/login")
        current, user = pending
        if lockout.too_many_attempts(db, user.username, at):
            problem: str | None = SLOW_DOWN
        else:
            secret = current.enrol_secret if enrolling else user.totp_secret
            last = sessions.last_totp_step(db, user.id)
            step = totp.matching_step(secret, code, at, last) if secret else None
            if step is None or not sessions.claim_totp_step(db, user.id, step):
                problem = _count_failure(db, request, user, lockout.TOTP_FAILED, "wrong code")
            else:
                problem = None
                if enrolling:
                    user.totp_secret = secret
                    user.totp_enrolled = True
                    _log(db, request, lockout.TOTP_ENROLLED, user.username)
                lockout.clear_failures(user)
                user.last_login_at = at
                _log(db, request, lockout.LOGIN_OK, user.username)
                token = sessions.promote(db, current, at)
    if problem is None:
        response = _redirect(home_for(user.role))
        set_cookie(request, response, token)
        return response
    flash(request, "error", problem)
    if lockout.is_locked(user):
        response = page(request, "login.html", "Sign in", status=401)
        clear_cookie(request, response)
        return response
    if enrolling:
        return _enrol_page(request, db, 401)
    return page(request, "totp_verify.html", "Second factor", status=401)


@router.post("/logout")
def logout(request: Request, db: DbSession) -> Response:
    token = request.cookies.get(COOKIE)
    if token:
        with db.begin():
            current = sessions.load(db, token, now(request))
            if current is not None:
                user = db.get(User, current.user_id)
                sessions.end(db, token)
                if user is not None:
                    _log(db, request, lockout.LOGOUT, user.username)
    response = _redirect("/login")
    clear_cookie(request, response)
    return response
