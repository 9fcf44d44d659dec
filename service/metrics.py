"""What the SOAP service counts, kept off the verification's own code: the server calls
:func:`begin` when a request arrives and :func:`observe` once its answer is built.

- ``olv_soap_requests_total``: by endpoint, IICMVA version, HTTP status, response code and
  reason codes (space-separated, as the audit trail writes them; empty for a WSDL, a fault or
  a refusal, which have no decision).
- ``olv_soap_request_seconds``: from arrival to the answer built, by endpoint.
- ``olv_soap_audit_queue_rows`` and ``olv_soap_audit_lag_seconds`` (kept by the audit writer,
  :mod:`service.audit`): audit rows not yet written, all workers together, and how long the
  oldest of them has waited (the worst worker).

No label carries a VIN, policy number, requester or anything else a request says about a
person: only the server's own vocabulary (paths it serves, versions, codes).

A request that came with a well-formed ``X-Request-ID`` (:mod:`olv.request_id`) gets one log
line when answered, carrying that id; a request without one is not logged, so the line's cost
falls only on traffic whose sender asked to trace it (the state portal sends one on every call).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram

from olv import request_id
from olv.metrics import LATENCY_BUCKETS
from service.soap_app import SETTLED
from service.verifier import ENDPOINTS

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "olv_soap_requests",
    "SOAP service requests by endpoint, version, HTTP status, response and reason codes",
    ["endpoint", "version", "status", "response", "reasons"],
)
LATENCY = Histogram(
    "olv_soap_request_seconds",
    "Seconds from a request's arrival to its answer, by endpoint",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
_OTHER = "other"  # any path the service does not serve: one label value, never the path
_REQUEST_ID = "HTTP_X_REQUEST_ID"
# Label children by their key: looking one up by label values costs more than counting.
_counters: dict[tuple[object, ...], Any] = {}
_timers: dict[str, Any] = {}


def begin(environ: dict[str, Any]) -> None:
    """A request arrived: its id, when the sender gave a well-formed one, goes into the log
    context of the request (each request runs in a task of its own)."""
    sent = environ.get(_REQUEST_ID)
    if sent is not None:
        rid = request_id.accept(sent)
        if rid is not None:
            request_id.current.set(rid)


def observe(environ: dict[str, Any], status: int, arrived: float) -> None:
    """The answer is built: count it and time it (and log it, when it is traced)."""
    seconds = time.monotonic() - arrived
    path = environ.get("PATH_INFO", "").rstrip("/") or "/"
    endpoint = path if path in ENDPOINTS else _OTHER
    settled = environ.get(SETTLED)
    if settled is not None:
        version, decision = settled.query.version, settled.decision
    else:
        version, decision = "", None
    key = (endpoint, version, status, decision)
    counter = _counters.get(key)
    if counter is None:
        counter = _counters[key] = REQUESTS.labels(*_label_values(key))
    counter.inc()
    timer = _timers.get(endpoint)
    if timer is None:
        timer = _timers[endpoint] = LATENCY.labels(endpoint)
    timer.observe(seconds)
    if request_id.current.get() is not None:
        labels = _label_values(key)
        log.info(
            "SOAP request answered",
            extra={
                "endpoint": endpoint,
                "version": version,
                "status": status,
                "response": labels[3],
                "reason_codes": labels[4],
                "latency_ms": round(seconds * 1000, 2),
            },
        )


def _label_values(key: tuple[Any, ...]) -> tuple[str, str, str, str, str]:
    endpoint, version, status, decision = key
    if decision is None:
        return endpoint, version, str(status), "", ""
    reasons = " ".join(code.value for code in decision.codes)
    return endpoint, version, str(status), decision.response_code, reasons
