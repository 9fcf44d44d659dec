"""What the portal counts (``/metrics``: :mod:`portal.routes.health`).

- ``olv_portal_requests_total`` and ``olv_portal_request_seconds``: every answer, by route
  (the route's template such as ``/api/v1/queries/{query_id}``, never the path a client
  wrote; ``other`` when no route matched), method and HTTP status (:mod:`portal.observe`).
- ``olv_portal_verifications_total``: every verification, by channel, HTTP status, response
  (Confirmed, Unconfirmed, or empty for an error), verdict and reason codes.
- ``olv_portal_insurer_calls_total`` and ``olv_portal_insurer_call_seconds``: every call to an
  insurer, by NAIC and outcome (``portal.insurer_client.OUTCOMES``, as judged by
  :mod:`portal.verdicts`).
- ``olv_portal_query_log_queue_rows`` and ``olv_portal_query_log_lag_seconds``: queries not
  yet written to the query log (all workers) and how long the oldest has waited (worst worker).
- ``olv_bob_files`` and ``olv_iies_files``: the files received, by status, counted in the
  database at each scrape (the same on every portal process and host); when the database does
  not answer within a second, ``olv_file_counts_up`` is 0 and the two are left out.

No label holds a VIN, plate, policy number or name: only the portal's own vocabulary and the
insurers' NAICs (company codes from the registry).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import Engine

from bob_loader.models import BobFile
from enforcement.models import IiesFile
from olv.metrics import LATENCY_BUCKETS
from olv.readiness import BoundedQuery

REQUESTS = Counter(
    "olv_portal_requests",
    "Portal answers by route, method and HTTP status",
    ["endpoint", "method", "status"],
)
LATENCY = Histogram(
    "olv_portal_request_seconds",
    "Seconds from a request's arrival to its answer, by route",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
VERIFICATIONS = Counter(
    "olv_portal_verifications",
    "Verifications by channel, HTTP status, response, verdict and reason codes",
    ["channel", "status", "response", "verdict", "reasons"],
)
INSURER_CALLS = Counter(
    "olv_portal_insurer_calls",
    "Calls to insurers by NAIC and outcome",
    ["naic", "outcome"],
)
INSURER_LATENCY = Histogram(
    "olv_portal_insurer_call_seconds",
    "Seconds an insurer call took, by NAIC (calls cancelled because another insurer "
    "confirmed first are not timed)",
    ["naic"],
    buckets=LATENCY_BUCKETS,
)
QUERY_LOG_QUEUE = Gauge(
    "olv_portal_query_log_queue_rows",
    "Queries waiting to be written to the query log",
    multiprocess_mode="livesum",
)
QUERY_LOG_LAG = Gauge(
    "olv_portal_query_log_lag_seconds",
    "How long the oldest query waiting for the query log has waited",
    multiprocess_mode="livemax",
)

OTHER = "other"
# Each metric's children by their labels: ``labels()`` takes a lock and builds the key every
# time, and these are counted several times per verification. The label values are few (the
# portal's own vocabulary and the registered NAICs).
_requests: dict[tuple[str, str, int], Any] = {}
_timers: dict[str, Any] = {}
_verifications: dict[tuple[str, int, str, str, str], Any] = {}
_calls: dict[tuple[str, str], Any] = {}
_call_timers: dict[str, Any] = {}


def answered(endpoint: str, method: str, status: int, seconds: float) -> None:
    key = (endpoint, method, status)
    counter = _requests.get(key)
    if counter is None:
        counter = _requests[key] = REQUESTS.labels(endpoint, method, str(status))
    counter.inc()
    timer = _timers.get(endpoint)
    if timer is None:
        timer = _timers[endpoint] = LATENCY.labels(endpoint)
    timer.observe(seconds)


def verified(query: dict[str, Any], calls: Iterable[dict[str, Any]]) -> None:
    """One logged verification (a query-log row and its insurer-call rows)."""
    key = (
        query["channel"],
        query["http_status"],
        query["status"] or "",
        query["verdict"] or "",
        query["reason_codes"] or "",
    )
    counter = _verifications.get(key)
    if counter is None:
        channel, status, *rest = key
        counter = _verifications[key] = VERIFICATIONS.labels(channel, str(status), *rest)
    counter.inc()
    for call in calls:
        naic, outcome = call["naic"], call["outcome"]
        calls_counter = _calls.get((naic, outcome))
        if calls_counter is None:
            calls_counter = _calls[naic, outcome] = INSURER_CALLS.labels(naic, outcome)
        calls_counter.inc()
        if outcome != "cancelled":
            timer = _call_timers.get(naic)
            if timer is None:
                timer = _call_timers[naic] = INSURER_LATENCY.labels(naic)
            timer.observe(call["latency_ms"] / 1000)


def query_log_backlog(rows: int, oldest_seconds: float) -> None:
    QUERY_LOG_QUEUE.set(rows)
    QUERY_LOG_LAG.set(oldest_seconds)


# --- file counts, from the database at each scrape -------------------------------------------

_FILE_TABLES = {"olv_bob_files": BobFile.__tablename__, "olv_iies_files": IiesFile.__tablename__}


def _count_files(cursor: Any) -> dict[str, list[tuple[str, int]]]:
    counts = {}
    for metric, table in _FILE_TABLES.items():
        cursor.execute(f"SELECT status, COUNT(*) FROM {table} GROUP BY status")
        counts[metric] = sorted((str(status), int(n)) for status, n in cursor.fetchall())
    return counts


class FileCounts:
    """The file-count families of one scrape, under the readiness probe's one-second bound."""

    def __init__(self, engine: Engine) -> None:
        self._query = BoundedQuery(engine, _count_files)

    async def families(self) -> list[Metric]:
        counts = await self._query.run()
        up = GaugeMetricFamily(
            "olv_file_counts_up", "1 when the file counts below were read from the database"
        )
        up.add_metric([], 0 if counts is None else 1)
        found: list[Metric] = [up]
        for metric, rows in (counts or {}).items():
            kind = "BoB" if metric == "olv_bob_files" else "IIES"
            family = GaugeMetricFamily(
                metric, f"{kind} files received, by status", labels=["status"]
            )
            for status, n in rows:
                family.add_metric([status], n)
            found.append(family)
        return found
