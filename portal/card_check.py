"""Checking an ID card for the portal (SPEC §7): the card's answer from its barcode (text or a
photo), then, for a valid card, the live verification of its vehicle and policy (SPEC §5).

Shared by ``POST /api/v1/cards/verify`` and the "Check a card" page. Decoding a photo takes
CPU (up to a few seconds for a badly turned one), so at most :data:`DECODERS` run at once, on
worker threads; the live verification then gets the whole budget of a query. Reading a photo
or PDF has the query's budget too, from the request's arrival: a request waits for a decoder
only while enough of it is left (then 503), a PDF gets at most :data:`PDF_SECONDS` of it, and
turned copies of a photo stop being tried when it is spent, so one sender of slow files cannot
hold the decoders from everyone else for long, nor keep them busy after hanging up.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from idcards import decode
from idcards.errors import CannotRead
from idcards.verify import verify_text
from portal import card_issuers
from portal.bounded_db import deadline, run_step
from portal.deps import Principal, received_at
from portal.errors import ApiError
from portal.schemas import VerifyRequest

DECODERS = 2
# A card's own PDF renders in well under a second: a PDF that needs longer is not one, and
# must not hold one of the few decoders for the CLI's PDF_SECONDS.
PDF_SECONDS = 3.0
# A read that would start with less than this left of the budget would rarely finish in it:
# such a request is told the readers are busy (503) rather than that its file is at fault.
READ_RESERVE_SECONDS = 1.0
# The least time the key registry's read gets, even when a photo's reading left the budget
# nearly spent: the card was read; throwing it away for want of a look-up would be worse.
REGISTRY_READ_SECONDS = 1.0
BUSY = "every card reader is busy: try again in a few seconds, or type the barcode's text"
MAX_PHOTO_BYTES = decode.MAX_UPLOAD_BYTES
MAX_TEXT = 4096
# A JSON or text body holds one card's text (at most MAX_TEXT): anything much larger is not a
# card, and refusing it before parsing keeps the parser's time and memory small. Photo uploads
# keep MAX_PHOTO_BYTES (the request guard's cap for this path).
MAX_TEXT_BODY = 64 * 1024
API_PATH = "/api/v1/cards/verify"


async def barcode_from_photo(request: Request, data: bytes) -> str:
    """The first card barcode in a photo, scan or PDF; 422 when there is none to read."""
    if not data:
        raise ApiError(422, "the upload is empty")
    decoders = request.app.state.__dict__.setdefault("card_decoders", asyncio.Semaphore(DECODERS))
    deadline = received_at(request) + request.app.state.portal_settings.budget_seconds
    try:
        # The loop's clock is time.monotonic(), the clock of received_at().
        async with asyncio.timeout_at(deadline - READ_RESERVE_SECONDS):
            await decoders.acquire()
    except TimeoutError:
        raise ApiError(503, BUSY) from None
    try:
        found = await run_in_threadpool(
            partial(decode.texts_from_bytes, data, deadline=deadline, pdf_seconds=PDF_SECONDS)
        )
    except decode.TooLateToRead:
        raise ApiError(503, BUSY, headers={"Retry-After": "5"}) from None
    except CannotRead as exc:
        raise ApiError(422, str(exc)) from None
    finally:
        decoders.release()
    if not found:
        raise ApiError(422, "no PDF-417 barcode found: photograph the card flat, filling the frame")
    return found[0]


def _verify(session: Session, text: str) -> dict[str, Any]:
    lookup = lambda kid: card_issuers.lookup(session, kid)  # noqa: E731
    # A plain dict: check() adds the live verification to the card's answer.
    return dict(verify_text(text, lookup, datetime.now(UTC).date()))


async def check(request: Request, principal: Principal, text: str, channel: str) -> dict[str, Any]:
    """The card's answer plus ``live``: the vehicle's verification today (valid cards only)."""
    try:
        # The key registry's read ends by the budget (a lock on it, a migration's, gives 503),
        # with a moment of its own when a photo's reading took the budget to its end.
        ends = max(deadline(request), time.monotonic() + REGISTRY_READ_SECONDS)
        answer = await run_step(request.app, ends, _verify, text)
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


TEXT_NAMES = ("barcode", "text")  # the JSON key or form field holding the barcode's text
FILE_NAMES = ("photo", "image", "file")  # the form field holding a photo, scan or PDF
RAW_KINDS = ("image/", "application/pdf", "application/octet-stream")


async def barcode_of(request: Request) -> str:
    """The barcode text of the request: JSON ``{"barcode": …}``, a ``text/plain`` body, a form
    with a ``photo`` upload or a ``barcode`` field, or a raw image or PDF body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(await _text_body(request))
        except (ValueError, RecursionError):
            # RecursionError: nesting deeper than the parser goes ("[[[[…") is no card either.
            raise ApiError(422, "body: not JSON") from None
        found = [body[n] for n in TEXT_NAMES if isinstance(body, dict) and n in body]
        if len(found) != 1 or not isinstance(found[0], str):
            raise ApiError(422, 'body: expected {"barcode": "<digits>"}')
        text = found[0]
    elif kind == "text/plain":
        try:
            text = (await _text_body(request)).decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "body: not UTF-8 text") from None
    elif kind.startswith(RAW_KINDS):
        return await barcode_from_photo(request, await request.body())
    elif kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        for name in FILE_NAMES:
            upload = form.get(name)
            if isinstance(upload, UploadFile) and (upload.size or upload.filename):
                data = await upload.read(MAX_PHOTO_BYTES + 1)
                return await barcode_from_photo(request, data)
        texts = [form.get(n) for n in TEXT_NAMES]
        text = next((t for t in texts if isinstance(t, str) and t.strip()), "")
        if not text:
            raise ApiError(422, "give a photo of the card or the barcode's text")
    else:
        raise ApiError(415, 'send JSON {"barcode": ...}, a photo, or a form with a photo')
    if len(text) > MAX_TEXT:
        raise ApiError(422, "barcode: longer than any card's")
    return text


async def _text_body(request: Request) -> bytes:
    """The body of a JSON or text request, refused with 413 past :data:`MAX_TEXT_BODY` (read
    as it arrives: a chunked body declares no length)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_TEXT_BODY:
        raise ApiError(413, f"a card's text is far shorter: body over {MAX_TEXT_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TEXT_BODY:
            raise ApiError(413, f"a card's text is far shorter: body over {MAX_TEXT_BODY} bytes")
    return bytes(body)
