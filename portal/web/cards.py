"""The "Check a card" page: a phone photo of an insurance ID card (or its barcode's text) →
whether the card is genuine and, for a genuine card, whether the vehicle is insured now.

One form, no JavaScript: on a phone the file input offers the camera. It goes through the
same code as ``POST /api/v1/cards/verify`` (:mod:`portal.card_check`); ``/cards/check.json``
answers the same object.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from portal import card_check, permissions
from portal.deps import Principal, permitted
from portal.errors import ApiError
from portal.routes.cards import barcode_of
from portal.web.query import VERDICT_ADVICE, VERDICT_WORDS
from portal.web.render import flash, page

router = APIRouter(include_in_schema=False)
CardChecker = Annotated[Principal, permitted(permissions.CHECK_CARDS)]
PAGE_PATH = "/cards/check"

CARD_LABELS = (
    ("issuer", "Issuer"),
    ("insurer_name", "Insurer"),
    ("naic", "NAIC"),
    ("policy_number", "Policy number"),
    ("effective", "Effective"),
    ("expires", "Expires"),
    ("issued", "Issued"),
    ("registration_until", "FS-75: valid for registration until"),
    ("names", "Insured / registrant"),
    ("year", "Year"),
    ("make", "Make"),
    ("vin", "VIN"),
    ("card_id", "Card id"),
)


def _view() -> dict[str, Any]:
    return {
        "card_labels": CARD_LABELS,
        "verdict_words": VERDICT_WORDS,
        "verdict_advice": VERDICT_ADVICE,
        "max_mb": card_check.MAX_PHOTO_BYTES // (1024 * 1024),
    }


@router.get(PAGE_PATH)
def check_form(request: Request, me: CardChecker) -> Response:
    return page(request, "cards_check.html", "Check a card", {"answer": None}, _view())


@router.post(PAGE_PATH)
@router.post(PAGE_PATH + ".json")
async def check_card(request: Request, me: CardChecker) -> Response:
    try:
        text = await barcode_of(request)
        answer = await card_check.check(request, me, text, "page")
    except ApiError as exc:
        if exc.status != 422:
            raise
        flash(request, "error", exc.error)
        return page(request, "cards_check.html", "Check a card", {"answer": None,
                    "error": exc.error}, _view(), status=422)  # fmt: skip
    return page(request, "cards_check.html", "Check a card", {"answer": answer}, _view())
