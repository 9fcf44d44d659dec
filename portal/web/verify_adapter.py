"""The pages' one door to the routing engine (``app.state.router``, a ``portal.routing.Router``),
the same one the JSON API uses: the query page asks about one vehicle, the batch page a list."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request

from portal.deps import Principal, received_at
from portal.errors import ErrorBody
from portal.routing import Router, check
from portal.schemas import VerifyRequest, VerifyResult


def _router(request: Request) -> Router:
    router: Router = request.app.state.router
    return router


async def verify_one(request: Request, me: Principal, body: VerifyRequest) -> VerifyResult:
    """One answer within the budget that started when the request arrived."""
    return await _router(request).verify(body, me, "page", received_at(request))


def problem(request: Request, me: Principal, body: VerifyRequest) -> str | None:
    """Why the routing engine would refuse this item (the API's 422), or None."""
    checked = check(body, me.role, request.app.state.settings)
    if isinstance(checked, list):
        return "; ".join(f"{e.field}: {e.message}" for e in checked)
    return None


async def verify_many(
    request: Request, me: Principal, bodies: Sequence[VerifyRequest]
) -> list[VerifyResult | ErrorBody]:
    """Answers in order (items checked with :func:`problem` first, so none is refused)."""
    return await _router(request).verify_batch(list(bodies), me)
