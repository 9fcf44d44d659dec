"""``POST /api/v1/cards/verify`` (check an ID card) and ``GET /api/v1/cards/issuers``.

The card comes as JSON ``{"barcode": "<the barcode's digits>"}`` (a handheld scanner's text),
as a ``text/plain`` body, as a raw ``image/*`` or ``application/pdf`` body, or as a multipart
upload with a ``photo`` file (PNG, JPEG or PDF) or a ``barcode`` field. The
answer is the card's (SPEC §7: valid, reason, issuer, key_id, card, expired, revoked,
signature) plus ``live``: for a valid card, the verification of its vehicle and policy now
(the same object as ``POST /api/v1/verify``), otherwise null. 422 when no card barcode can be
read at all.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request

from portal import card_check, card_issuers, permissions
from portal.deps import DbSession, Principal, permitted
from portal.errors import error_responses

router = APIRouter(prefix="/api/v1/cards", tags=["id cards"])
CardChecker = Annotated[Principal, permitted(permissions.CHECK_CARDS)]
IssuerReader = Annotated[Principal, permitted(permissions.READ_CARD_ISSUERS)]

_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"barcode": {"type": "string", "maxLength": card_check.MAX_TEXT}},
                    "required": ["barcode"],
                }
            },
            "text/plain": {"schema": {"type": "string", "maxLength": card_check.MAX_TEXT}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
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


@router.post(
    "/verify",
    responses=error_responses(401, 403, 413, 415, 422, 429, 503),
    summary="Check an insurance ID card (barcode text or a photo) and verify its vehicle live",
    openapi_extra=_BODY,
)
async def verify_card(request: Request, principal: CardChecker) -> dict[str, Any]:
    text = await card_check.barcode_of(request)
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
