"""The enforcement API of the state portal (SPEC §6):

* ``POST /api/v1/iies/transactions``  an insurer's transactions (the CSV of §6 as the body,
  up to 5,000 rows); the insurer is the token's NAIC. 200 with the acknowledgement, or 422 in
  the portal's error shape when the call is rejected whole (the acknowledgement is kept).
* ``GET /api/v1/iies/returns``        dispositions: an insurer reads its own NAIC's only.
* ``GET /api/v1/iies/registrants``    the registrant of a plate: DMV staff and admins only.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from enforcement import registrations
from enforcement.load import Ack, load
from enforcement.models import Registrant
from enforcement.returns import line, returns
from enforcement.settings import API_MAX_ROWS
from olv import db, normalize
from portal.deps import Principal, budget_left, permitted, within_budget
from portal.errors import ApiError, FieldError, error_responses
from portal.models import Registration
from portal.permissions import Role, register

SEND = register("iies_send", Role.INSURER)
READ_RETURNS = register("iies_returns", Role.INSURER, Role.DMV, Role.ADMIN)
READ_REGISTRANTS = register("read_registrants", Role.DMV, Role.ADMIN)

Sender = Annotated[Principal, permitted(SEND)]
ReturnsReader = Annotated[Principal, permitted(READ_RETURNS)]
RegistrantReader = Annotated[Principal, permitted(READ_REGISTRANTS)]

router = APIRouter(prefix="/api/v1/iies", tags=["enforcement"])


class Acknowledgement(BaseModel):
    ack_id: int
    file: str
    naic: str | None
    channel: str
    status: str
    rows: int
    counts: dict[str, int]
    error_code: str | None
    error: str | None
    received_at: str | None


class ReturnLine(BaseModel):
    txn_id: str
    disposition: str
    codes: list[str]
    plate: str | None


class Returns(BaseModel):
    naic: str
    returns: list[ReturnLine]


class RegistrantView(BaseModel):
    plate: str
    state: str
    vin: str
    registrant: dict[str, Any] | None


@router.post(
    "/transactions",
    response_model=Acknowledgement,
    responses=error_responses(401, 403, 413, 422, 429),
    summary="Send insurer transactions (CSV body)",
)
async def send_transactions(principal: Sender, request: Request) -> Acknowledgement:
    if not principal.naic:
        raise ApiError(403, "this insurer account has no NAIC")
    body = await request.body()
    engine = request.app.state.engine
    # The call's transaction, and its waits (for the insurer's SFTP file loading under the
    # same lock, for any other lock), end within the request's budget: past it 503, nothing
    # kept, and the same bytes sent again are loaded then (or get the first acknowledgement).
    seconds = budget_left(request)
    try:
        ack: Ack = await run_in_threadpool(
            lambda: load(
                engine,
                body,
                name="api",
                channel="api",
                sender_naic=principal.naic,
                max_rows=API_MAX_ROWS,
                seconds=seconds,
            )
        )
    except (OperationalError, TimeoutError) as exc:  # TimeoutError: no time was left at all
        why = (
            "the state database is unavailable"
            if isinstance(exc, OperationalError) and db.is_connection_failure(exc)
            else "the state database could not take the call in time (another of your files"
            " may be loading)"
        )
        raise ApiError(
            503, f"{why}; nothing was kept: send it again", headers={"Retry-After": "5"}
        ) from exc
    if not ack.accepted:
        message = f"acknowledgement {ack.ack_id}: rejected ({ack.error_code}): {ack.error}"
        raise ApiError(422, message, [FieldError(field="body", message=f"{ack.error_code}")])
    return Acknowledgement(**ack.as_dict())


@router.get(
    "/returns",
    response_model=Returns,
    responses=error_responses(401, 403, 422, 429),
    summary="Dispositions of an insurer's transactions",
)
async def get_returns(
    principal: ReturnsReader,
    request: Request,
    naic: Annotated[str | None, Query(pattern=r"^\d{5}$")] = None,
    since: date | None = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 5000,
) -> Returns:
    """An insurer: its own NAIC (the default); DMV staff and admins: the NAIC named."""
    if principal.role == Role.INSURER:
        if naic is not None and naic != principal.naic:
            raise ApiError(403, "an insurer reads its own returns only")
        naic = principal.naic
    if not naic:
        raise ApiError(422, "name the insurer", [FieldError(field="naic", message="required")])
    engine = request.app.state.engine
    found = await within_budget(
        request, lambda: [line(t) for t in returns(engine, naic, since, limit)]
    )
    return Returns(naic=naic, returns=[ReturnLine(**x) for x in found])


@router.get(
    "/registrants",
    response_model=list[RegistrantView],
    responses=error_responses(401, 403, 404, 422, 429),
    summary="The registrant of a plate (DMV staff and admins)",
)
async def get_registrants(
    principal: RegistrantReader,
    request: Request,
    plate: Annotated[str, Query(min_length=1, max_length=20)],
    state: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")] = None,
) -> list[RegistrantView]:
    wanted = normalize.plate(plate)

    def read() -> list[RegistrantView]:
        query = (
            select(Registration, Registrant)
            .outerjoin(Registrant, Registrant.registration_id == Registration.id)
            .where(Registration.plate == wanted)
            .order_by(Registration.state)
        )
        if state:
            query = query.where(Registration.state == state.upper())
        with request.app.state.sessions() as session:
            return [
                RegistrantView(
                    plate=reg.plate,
                    state=reg.state,
                    vin=reg.vin,
                    registrant=_registrant(person),
                )
                for reg, person in session.execute(query)
            ]

    found = await within_budget(request, read)
    if not found:
        raise ApiError(404, f"plate {wanted} is not registered")
    return found


def _registrant(person: Registrant | None) -> dict[str, Any] | None:
    if person is None:
        return None
    return {column: getattr(person, column) for column in registrations.OPTIONAL}
