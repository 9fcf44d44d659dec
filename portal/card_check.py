"""Checking an ID card for the portal (SPEC §7): the card's answer from its barcode (text or a
photo), then, for a valid card, the live verification of its vehicle and policy (SPEC §5).

Shared by ``POST /api/v1/cards/verify`` and the "Check a card" page. Decoding a photo takes
CPU (up to a few seconds for a badly turned one), so at most :data:`DECODERS` run at once, on
worker threads; the live verification then gets the whole budget of a query.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from idcards import decode
from idcards.errors import CannotRead
from idcards.verify import verify_text
from portal import card_issuers
from portal.deps import Principal
from portal.errors import ApiError
from portal.schemas import VerifyRequest

DECODERS = 2
MAX_PHOTO_BYTES = decode.MAX_UPLOAD_BYTES


async def barcode_from_photo(request: Request, data: bytes) -> str:
    """The first card barcode in a photo, scan or PDF; 422 when there is none to read."""
    if not data:
        raise ApiError(422, "the upload is empty")
    decoders = request.app.state.__dict__.setdefault("card_decoders", asyncio.Semaphore(DECODERS))
    async with decoders:
        try:
            found = await run_in_threadpool(decode.texts_from_bytes, data)
        except CannotRead as exc:
            raise ApiError(422, str(exc)) from None
    if not found:
        raise ApiError(422, "no PDF-417 barcode found: photograph the card flat, filling the frame")
    return found[0]


def _verify(request: Request, text: str) -> dict[str, Any]:
    with request.app.state.sessions() as session:
        lookup = lambda kid: card_issuers.lookup(session, kid)  # noqa: E731
        return verify_text(text, lookup, datetime.now(UTC).date())


async def check(request: Request, principal: Principal, text: str, channel: str) -> dict[str, Any]:
    """The card's answer plus ``live``: the vehicle's verification today (valid cards only)."""
    try:
        answer = await run_in_threadpool(_verify, request, text)
    except CannotRead as exc:
        raise ApiError(422, str(exc)) from None
    answer["live"] = None
    card = answer["card"]
    if answer["valid"] and card is not None:
        question = VerifyRequest(
            vin=card["vin"], naic=card["naic"], policy_number=card["policy_number"]
        )
        try:
            result = await request.app.state.router.verify(
                question, principal, channel, time.monotonic()
            )
            answer["live"] = result.model_dump(mode="json")
        except ApiError as exc:
            answer["live"] = {"status": exc.status, "error": exc.error}
    return answer
