"""The pages' one door to the routing engine (``portal.routing``), the same one the JSON API
uses: the query page sends one vehicle, the batch page a list, with the channel they came by."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request

from portal.deps import Principal
from portal.errors import ErrorBody
from portal.schemas import VerifyRequest, VerifyResult


async def verify_one(request: Request, me: Principal, body: VerifyRequest) -> VerifyResult:
    from portal import routing

    return await routing.verify(request, me, body, channel="page")


async def verify_many(
    request: Request, me: Principal, bodies: Sequence[VerifyRequest]
) -> list[VerifyResult | ErrorBody]:
    from portal import routing

    return await routing.verify_batch(request, me, list(bodies), channel="batch")
