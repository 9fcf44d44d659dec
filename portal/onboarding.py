"""``olv insurers check NAIC``: the onboarding test a state runs before an insurer goes live.

A fixed scenario set, in the insurer's registered version, through the same client the
routing uses (so TLS, certificates and timeouts are exercised too). Each scenario passes or
fails with a reason; answers must validate against our XSD of that version.

=====================  ====================================================================
scenario               passes when
=====================  ====================================================================
wsdl                   ``<url>?wsdl`` answers 200 with a WSDL document
known vehicle          (``--vin``/``--policy``) Confirmed for today
unknown VIN            Unconfirmed with VIN1/PKEY2/PKEY4 (00200510: 7 or 9)
wrong NAIC             Unconfirmed with NAIC2 (7)
missing elements       blank NAIC, key, VIN and date: NAIC1 PKEY1 VIN4 VDT2 (3 2 4 5)
malformed date         Unconfirmed with IDF (1)
date out of window     a date two years back: Unconfirmed with VDT1 (8)
UNKNOWN key            (insurers registered with ``--accepts-unknown``) Confirmed for the
                       ``--vin`` given, else Unconfirmed VIN1 (7) for an unknown VIN
schema-valid answers   every answer above validated against our XSD
response time          every answer within 5 s (the slowest is reported; over 1.75 s is noted)
=====================  ====================================================================
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from lxml import etree
from sqlalchemy import select

from olv import db, xmlsafe
from olv.config import Settings
from olv.errors import OlvError
from olv.iicmva import V0510, q
from portal import soap_wire
from portal.answer_time import RULE_MS, RULE_SECONDS, TEXAS_MS, TEXAS_SECONDS
from portal.insurer_client import CallFailed, CallResult, InsurerClient, InsurerConfig
from portal.models import Insurer
from portal.settings import PortalSettings

NOWHERE_VIN = "OLVCHECK000000000"  # no insurer covers it
NOWHERE_POLICY = "OLV-CHECK-NO-SUCH-POLICY"
WRONG_NAIC = "00000"
CALL_TIMEOUT = 10.0

# 00200809 name → what a 00200510 insurer sends for it.
_NUMBER = {
    "IDF": "1",
    "PKEY1": "2",
    "NAIC1": "3",
    "VIN4": "4",
    "VDT2": "5",
    "NAIC2": "7",
    "PKEY2": "7",
    "VIN1": "7",
    "VDT1": "8",
    "PKEY4": "9",
}


class OnboardingError(OlvError):
    """The check cannot run (unknown NAIC); nothing was sent."""

    exit_code = 2


@dataclass(frozen=True)
class ScenarioResult:
    name: str
    passed: bool
    why: str

    def line(self) -> str:
        return f"{'pass' if self.passed else 'FAIL'}  {self.name}: {self.why}"


@dataclass
class _Run:
    insurer: InsurerConfig
    client: InsurerClient
    today: date
    calls: list[CallResult] = field(default_factory=list)

    def ask(self, key: str, vin: str, day: date, naic: str | None = None) -> soap_wire.Ask:
        return soap_wire.Ask(
            naic=naic or self.insurer.naic,
            policy_key=key,
            vin=vin,
            day=day,
            reason="BIVER",
            state="XX",
            requestor="OLV onboarding test",
        )

    async def send(
        self, ask: soap_wire.Ask, edit: Callable[[etree._Element], None] | None = None
    ) -> CallResult:
        body = soap_wire.build_request(ask, self.insurer.version)
        if edit is not None:
            root = xmlsafe.parse(body)
            edit(root)
            body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        call = await self.client.exchange(self.insurer, body, CALL_TIMEOUT)
        self.calls.append(call)
        return call

    def codes(self, *names: str) -> set[str]:
        """The wire values of ``names`` in this insurer's version."""
        if self.insurer.version == V0510:
            return {_NUMBER[n] for n in names}
        return set(names)


def _expect(call: CallResult, status: str, codes: set[str] | None = None) -> tuple[bool, str]:
    """Did the call answer ``status`` (with at least one of ``codes``)?"""
    if call.answer is None:
        return False, f"no usable answer ({call.outcome}: {call.detail})"
    got = " ".join((call.answer.response_code, *call.answer.codes))
    if call.answer.response_code != status:
        return False, f"expected {status}, got {got}"
    if codes is not None and not codes & set(call.answer.codes):
        return False, f"expected one of {' '.join(sorted(codes))}, got {got}"
    return True, f"{got} in {call.latency_ms:.0f} ms"


def _blank(names: tuple[str, ...]) -> Callable[[etree._Element], None]:
    def edit(root: etree._Element) -> None:
        for name in names:
            for element in root.iter(q(name)):
                element.text = ""

    return edit


def _set_date(text: str) -> Callable[[etree._Element], None]:
    def edit(root: etree._Element) -> None:
        for element in root.iter(q("VerificationDate")):
            element.text = text

    return edit


async def _wsdl(run: _Run) -> ScenarioResult:
    url = run.insurer.url.split("?")[0] + "?wsdl"
    started = time.perf_counter()
    try:
        reply = await run.client.transport.get(run.insurer, url, CALL_TIMEOUT)
    except CallFailed as exc:
        return ScenarioResult("wsdl", False, f"{url}: {exc.kind} ({exc})")
    elapsed = (time.perf_counter() - started) * 1000
    if reply.status != 200:
        return ScenarioResult("wsdl", False, f"{url}: HTTP {reply.status}")
    try:
        root = xmlsafe.parse(reply.content)
    except xmlsafe.UnsafeXMLError as exc:
        return ScenarioResult("wsdl", False, f"{url}: {exc}")
    if etree.QName(root).localname != "definitions":
        return ScenarioResult("wsdl", False, f"{url}: not a WSDL document")
    return ScenarioResult("wsdl", True, f"{url} in {elapsed:.0f} ms")


async def run_scenarios(
    insurer: InsurerConfig, client: InsurerClient, today: date, vin: str | None, policy: str | None
) -> list[ScenarioResult]:
    run = _Run(insurer, client, today)
    results = [await _wsdl(run)]

    async def scenario(name: str, call: CallResult, status: str, *codes: str) -> None:
        passed, why = _expect(call, status, run.codes(*codes) if codes else None)
        results.append(ScenarioResult(name, passed, why))

    if vin and policy:
        await scenario("known vehicle", await run.send(run.ask(policy, vin, today)), "Confirmed")
    call = await run.send(run.ask(policy or NOWHERE_POLICY, NOWHERE_VIN, today))
    await scenario("unknown VIN", call, "Unconfirmed", "VIN1", "PKEY2", "PKEY4")
    call = await run.send(run.ask(policy or NOWHERE_POLICY, vin or NOWHERE_VIN, today, WRONG_NAIC))
    await scenario("wrong NAIC", call, "Unconfirmed", "NAIC2")
    blank = ("NAIC", "PolicyKey", "UniqueKey", "VIN", "VerificationDate")
    call = await run.send(run.ask(NOWHERE_POLICY, NOWHERE_VIN, today), _blank(blank))
    await scenario("missing elements", call, "Unconfirmed", "NAIC1", "PKEY1", "VIN4", "VDT2")
    call = await run.send(
        run.ask(NOWHERE_POLICY, NOWHERE_VIN, today), _set_date("2024-13-45T00:00:00")
    )
    await scenario("malformed date", call, "Unconfirmed", "IDF")
    old = today - timedelta(days=730)
    call = await run.send(run.ask(policy or NOWHERE_POLICY, vin or NOWHERE_VIN, old))
    await scenario("date out of window", call, "Unconfirmed", "VDT1")
    if insurer.accepts_unknown:
        call = await run.send(run.ask("UNKNOWN", vin or NOWHERE_VIN, today))
        if vin:
            await scenario("UNKNOWN key", call, "Confirmed")
        else:
            await scenario("UNKNOWN key", call, "Unconfirmed", "VIN1")
    invalid = [c for c in run.calls if c.outcome in ("invalid", "fault", "http_error")]
    results.append(
        ScenarioResult(
            "schema-valid answers",
            not invalid and bool(run.calls),
            f"{len(run.calls) - len(invalid)} of {len(run.calls)} answers valid against the "
            f"{insurer.version} schema"
            + (f"; {invalid[0].outcome}: {invalid[0].detail}" if invalid else ""),
        )
    )
    answered = [c for c in run.calls if c.answer is not None]
    slowest = max((c.latency_ms for c in answered), default=0.0)
    over_texas = sum(c.latency_ms > TEXAS_MS for c in answered)
    timed_out = [c for c in run.calls if c.outcome == "timeout"]
    time_ok = bool(answered) and slowest <= RULE_MS and not timed_out
    why = f"slowest answer {slowest:.0f} ms (rule: {RULE_SECONDS:.0f} s)"
    if over_texas:
        why += f"; {over_texas} over {TEXAS_SECONDS} s"
    if timed_out:
        why += f"; {len(timed_out)} without an answer in {CALL_TIMEOUT:.0f} s"
    results.append(ScenarioResult("response time", time_ok, why))
    return results


async def run_checks(
    settings: Settings, naic: str, *, vin: str | None, policy: str | None
) -> list[ScenarioResult]:
    engine = db.open_database(settings.database_url)
    try:
        with db.session_factory(engine)() as session:
            row = session.scalar(select(Insurer).where(Insurer.naic == naic))
            insurer = InsurerConfig.from_row(row) if row else None
    finally:
        engine.dispose()
    if insurer is None:
        raise OnboardingError(f"no insurer {naic!r} registered (olv insurers add)")
    client = InsurerClient(None, PortalSettings())
    try:
        today = datetime.now(settings.zone).date()
        return await run_scenarios(insurer, client, today, vin, policy)
    finally:
        await client.aclose()
