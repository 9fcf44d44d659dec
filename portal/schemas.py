"""The JSON API's types (SPEC §5). Database rows live in :mod:`portal.models`, SOAP types in
:mod:`portal.soap_wire`; :mod:`portal.routing` maps between them."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from olv import normalize
from olv.iicmva import REQUEST_REASONS
from portal.errors import ErrorBody

RequestReason = Literal["ACC", "ACCV", "BIVER", "PIPVER", "REGREN", "VEHREG", "VIOL"]
assert set(RequestReason.__args__) == set(REQUEST_REASONS)  # type: ignore[attr-defined]

Verdict = Literal["confirmed", "unconfirmed", "unable_to_verify"]
Source = Literal["insurer", "book_of_business", "broadcast"]
MAX_BATCH = 1000


class VerifyRequest(BaseModel):
    """One vehicle: ``vin`` or ``plate`` (+ ``plate_state`` when the plate is registered in
    several states); ``naic`` + ``policy_number`` as read off an ID card, optional."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"plate": "ABC123", "plate_state": "ID"}]},
    )

    vin: str | None = Field(None, min_length=1, max_length=25, examples=["1HGCM82633A004352"])
    plate: str | None = Field(None, min_length=1, max_length=12, examples=["ABC123"])
    plate_state: str | None = Field(None, pattern=r"^[A-Za-z]{2}$", examples=["ID"])
    naic: str | None = Field(None, description="five digits", examples=["12345"])
    policy_number: str | None = Field(None, min_length=1, max_length=50)
    date: str | None = Field(
        None,
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        description="YYYY-MM-DD; default today in OLV_TIMEZONE",
        json_schema_extra={"format": "date"},
    )
    reason: RequestReason | None = Field(None, description="default VIOL (VEHREG for the dmv role)")

    @field_validator("vin", "plate", "policy_number")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # Runs first (declared first): a NUL breaks PostgreSQL, and what XML cannot carry
        # could not be sent to an insurer.
        if value is not None and not normalize.is_field_text(value):
            raise ValueError("contains a control character")
        return value

    @field_validator("vin")
    @classmethod
    def _vin(cls, value: str | None) -> str | None:
        if value is not None and not normalize.vin(value):
            raise ValueError("VIN is blank")
        return value

    @field_validator("plate")
    @classmethod
    def _plate(cls, value: str | None) -> str | None:
        if value is not None and not normalize.plate(value):
            # Anything else refused, not dropped: dropped, it would name another plate.
            raise ValueError("a plate is letters A-Z and digits 0-9 (spaces and dashes allowed)")
        return value

    @field_validator("naic")
    @classmethod
    def _naic(cls, value: str | None) -> str | None:
        if value is not None and not normalize.is_naic(value):
            raise ValueError("a NAIC is five digits")
        return value

    @field_validator("policy_number")
    @classmethod
    def _policy(cls, value: str | None) -> str | None:
        # Sent without its punctuation (SPEC §5 step 5): nothing would be left to send.
        if value is not None and not normalize.policy_key(value):
            raise ValueError("policy number has no letters or digits")
        return value

    @field_validator("date")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise ValueError("not a real date (YYYY-MM-DD)") from None
        return value


class Reason(BaseModel):
    """A reason code by its 00200809 name; ``number`` is the 00200510 code the insurer sent,
    and ``alternatives`` the other names that number can stand for."""

    code: str
    description: str
    number: str | None = None
    alternatives: list[str] = []


class BookOfBusiness(BaseModel):
    """What the state's book of business says about the vehicle (no names, no addresses)."""

    naic: str
    policy_number: str
    policy_type: str
    effective_date: str
    expiration_date: str | None
    file: str
    loaded_at: str


class VerifyResult(BaseModel):
    status: Literal["Confirmed", "Unconfirmed"]
    verdict: Verdict
    reasons: list[Reason]
    naic: str | None
    insurer: str | None
    policy_number: str | None
    source: Source
    book_of_business: BookOfBusiness | None
    elapsed_ms: float
    query_id: str
    vin: str = Field(description="the VIN verified (looked up from the plate when one was given)")
    date: dt.date = Field(description="the verification date")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[VerifyRequest] = Field(min_length=1, max_length=MAX_BATCH)


class BatchResponse(BaseModel):
    """One entry per item, in order: a result, or the error for that item (e.g. 404)."""

    results: list[VerifyResult | ErrorBody]


class QueryRecord(BaseModel):
    """A logged query as kept in the query log."""

    query_id: str
    at: dt.datetime
    username: str
    role: str
    channel: str
    vin: str | None
    plate: str | None
    plate_state: str | None
    naic: str | None
    policy_number: str | None
    date: dt.date | None
    reason: str | None
    http_status: int
    status: str | None
    verdict: str | None
    reasons: list[Reason]
    answered_naic: str | None
    insurer: str | None
    answered_policy_number: str | None
    source: str | None
    error: str | None
    latency_ms: float
