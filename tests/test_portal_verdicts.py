"""Which insurer answers leave an insurer unavailable is decided in ``portal.verdicts`` only:
the client reports what came over the wire, the verdict rules judge it."""

from __future__ import annotations

import asyncio

import pytest

from olv.iicmva import V0510, V0809
from portal import verdicts
from portal.insurer_client import CallResult, InsurerClient, InsurerConfig, MemoryTransport, Reply
from portal.settings import PortalSettings
from tests.helpers.portal import answer


def exchange(version: str, body: bytes) -> CallResult:
    async def handler(insurer: InsurerConfig, request: bytes) -> Reply:
        return Reply(200, body)

    async def run() -> CallResult:
        client = InsurerClient(MemoryTransport(handler), PortalSettings())
        insurer = InsurerConfig("10001", "Insurer", "http://insurer.invalid/", version)
        return await client.exchange(insurer, b"<x/>", 5.0)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("version", "code", "reasons", "judged"),
    [
        (V0809, "Unconfirmed", ("SYSU",), "unavailable"),
        (V0809, "Unconfirmed", ("UREQ",), "unavailable"),
        (V0510, "Unconfirmed", ("12",), "unavailable"),
        (V0510, "Unconfirmed", ("6",), "unavailable"),
        (V0809, "Unconfirmed", ("VIN1", "SYSU"), "unavailable"),
        (V0809, "Confirmed", ("SYSU",), "ok"),  # a Confirmed is a Confirmed
        (V0809, "Unconfirmed", ("PKEY2", "VIN1"), "ok"),
        (V0510, "Unconfirmed", ("7",), "ok"),
    ],
)
def test_the_client_reports_the_answer_and_the_verdict_rules_judge_it(
    version: str, code: str, reasons: tuple[str, ...], judged: str
) -> None:
    call = exchange(version, answer(version, code, reasons))
    assert call.outcome == "ok" and call.answer is not None
    assert call.answer.codes == reasons
    assert verdicts.judged(call).outcome == judged
    assert verdicts.usable(verdicts.judged(call)) is (judged == "ok")


def test_what_the_wire_refused_stays_as_the_client_reported_it() -> None:
    call = exchange(V0809, b"<html>busy</html>")
    assert call.outcome == "invalid" and verdicts.judged(call) == call
    assert not verdicts.usable(call)
