"""``POST /api/v1/cards/verify`` (check an ID card) and ``GET /api/v1/cards/issuers``.

The card comes as JSON ``{"barcode": "<the barcode's digits>"}`` (a handheld scanner's text) or
as a multipart upload with a ``photo`` file (PNG, JPEG or PDF) or a ``barcode`` field. The
answer is the card's (SPEC §7: valid, reason, issuer, key_id, card, expired, revoked,
signature) plus ``live``: for a valid card, the verification of its vehicle and policy now
(the same object as ``POST /api/v1/verify``), otherwise null. 422 when no card barcode can be
read at all.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from portal import card_check, card_issuers, permissions
from portal.deps import DbSession, Principal, permitted
from portal.errors import ApiError, error_responses

router = APIRouter(prefix="/api/v1/cards", tags=["id cards"])
CardChecker = Annotated[Principal, permitted(permissions.CHECK_CARDS)]
IssuerReader = Annotated[Principal, permitted(permissions.READ_CARD_ISSUERS)]
UPLOAD_PATH = "/api/v1/cards/verify"
MAX_TEXT = 4096

_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"barcode": {"type": "string", "maxLength": MAX_TEXT}},
                    "required": ["barcode"],
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "photo": {"type": "string", "format": "binary"},
                        "barcode": {"type": "string"},
                    },
                }
            },
        }
    }
}


async def barcode_of(request: Request) -> str:
    """The barcode text of a JSON body or of a form's ``barcode`` field or ``photo`` upload."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(422, "body: not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("barcode"), str):
            raise ApiError(422, 'body: expected {"barcode": "<digits>"}')
        text: object = body["barcode"]
    elif kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        photo, text = form.get("photo"), form.get("barcode")
        if isinstance(photo, UploadFile) and (photo.size or photo.filename):
            data = await photo.read(card_check.MAX_PHOTO_BYTES + 1)
            return await card_check.barcode_from_photo(request, data)
        if not isinstance(text, str) or not text.strip():
            raise ApiError(422, "give a photo of the card or the barcode's text")
    else:
        raise ApiError(415, 'send JSON {"barcode": ...} or a multipart form with a photo')
    assert isinstance(text, str)  # both branches above refuse anything else
    if len(text) > MAX_TEXT:
        raise ApiError(422, "barcode: longer than any card's")
    return text


@router.post(
    "/verify",
    responses=error_responses(401, 403, 413, 415, 422, 429, 503),
    summary="Check an insurance ID card (barcode text or a photo) and verify its vehicle live",
    openapi_extra=_BODY,
)
async def verify_card(request: Request, principal: CardChecker) -> dict[str, Any]:
    text = await barcode_of(request)
    return await card_check.check(request, principal, text, "api")


@router.get(
    "/issuers",
    responses=error_responses(401, 403, 429),
    summary="Registered ID-card issuers and their keys (a liaison: their NAIC's only)",
)
def list_issuers(db: DbSession, principal: IssuerReader) -> list[dict[str, Any]]:
    naics = permissions.visible_naics(principal)
    if naics is None:
        return card_issuers.issuers(db)
    return [row for naic in sorted(naics) for row in card_issuers.issuers(db, naic)]
