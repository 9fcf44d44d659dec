"""One verification, end to end: read the request, decide, build the answer, audit it.

A :class:`Verifier` holds the per-process resources (engine, store, schemas, audit writer);
it is built lazily in each server worker after the fork, never at import.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from lxml import etree

import xsd
from olv import db, normalize
from olv.config import Settings
from olv.iicmva import V0510, V0809, Code
from service import response
from service.audit import AuditEntry, AuditWriter
from service.auth import Requester
from service.coverage import Decision, Window, decide
from service.request import CoverageQuery, read
from service.store import SqlPolicyStore
from service.versions import SPECS, detect

log = logging.getLogger(__name__)

ENDPOINTS: dict[str, str | None] = {
    f"/iicmva/{V0510}": V0510,
    f"/iicmva/{V0809}": V0809,
    "/iicmva": None,  # auto-detect by the request's shape
}


class Verifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = db.make_engine(settings.database_url, **_engine_options(settings))
        self.store = SqlPolicyStore(self.engine)
        self.audit = AuditWriter(
            self.engine, settings.audit_flush_seconds, settings.audit_batch_size
        )
        self.schemas = {v: xsd.load_schema(v) for v in SPECS}
        self.naics = frozenset(settings.naics) or None

    def close(self) -> None:
        self.audit.close()
        self.store.close()  # its kept connection is checked out: dispose() alone leaves it open
        self.engine.dispose()

    def answer(
        self,
        request: etree._Element,
        endpoint_version: str | None,
        requester: Requester,
        started: float,
    ) -> etree._Element:
        version = endpoint_version or detect(request)
        query = CoverageQuery(version)
        try:
            query = read(request, version, self.schemas[version])
            decision = decide(
                query,
                store=self.store,
                authorized=requester.authorized,
                window=self._window(),
                maintenance=self.settings.maintenance,
                naics=self.naics,
            )
        except Exception:  # noqa: BLE001 - SPEC: any internal failure answers SYSU, never a fault
            log.exception("verification failed; answering SYSU")
            decision = Decision((Code.SYSU,))
        if time.monotonic() - started > self.settings.deadline_seconds:
            decision = Decision((Code.SYSU,))
        body = self._build(request, version, decision, query)
        self._audit(query, requester, decision, started)
        return body

    def _build(
        self, request: etree._Element, version: str, decision: Decision, query: CoverageQuery
    ) -> etree._Element:
        body = response.build(request, version, decision.codes, found=query.found or None)
        unchecked = query.format_errors or {Code.UREQ, Code.SYSU} & set(decision.codes)
        # A request that was not checked (or not valid) must still get a valid echo.
        if unchecked and not self.schemas[version].validate(body):
            body = response.build(
                request, version, decision.codes, echo_requestor=False, found=query.found or None
            )
        return body

    def _window(self) -> Window:
        today = datetime.now(self.settings.zone).date()
        return Window(today, self.settings.verify_past_days, self.settings.verify_future_days)

    def _audit(
        self, query: CoverageQuery, requester: Requester, decision: Decision, started: float
    ) -> None:
        self.audit.record(
            AuditEntry(
                at=datetime.now(UTC),
                requester=requester.identity,
                version=query.version,
                naic=query.naic,
                policy_key=query.policy_key,
                vin=normalize.vin(query.vin) or None,
                verification_date=query.verification_date,
                request_reason=query.request_reason,
                response_code=decision.response_code,
                reason_codes=" ".join(c.value for c in decision.codes),
                latency_ms=(time.monotonic() - started) * 1000.0,
            )
        )


def _engine_options(settings: Settings) -> dict[str, object]:
    if db.is_sqlite(settings.database_url):
        return {}
    timeout_ms = int(settings.deadline_seconds * 1000)
    return {
        "connect_args": {
            "connect_timeout": max(1, int(settings.deadline_seconds)),
            "options": f"-c statement_timeout={timeout_ms}",
        }
    }
