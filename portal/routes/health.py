"""``/healthz``: the process answers (for load balancers and the test helpers); ``/readyz``:
the database answers ``SELECT 1`` within a second (503 otherwise, within that second, also
when the database hangs: :mod:`olv.readiness`); ``/metrics``: for the sources in
``OLV_METRICS_NETWORKS`` only (:mod:`olv.metrics`, :mod:`portal.metrics`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from olv import forwarding, metrics
from olv.readiness import Readiness
from portal.errors import ApiError
from portal.metrics import FileCounts

router = APIRouter(tags=["health"])


@router.get("/healthz", response_class=PlainTextResponse, include_in_schema=False)
async def healthz() -> str:
    return "ok"


@router.get("/readyz", response_class=PlainTextResponse, include_in_schema=False)
async def readyz(request: Request) -> PlainTextResponse:
    readiness: Readiness = request.app.state.readiness
    if await readiness.ready():
        return PlainTextResponse("ready")
    return PlainTextResponse("the database does not answer", status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics_text(request: Request) -> Response:
    # The request guard has already judged the source (a forwarding header counts only
    # from a trusted proxy); an unusable forwarded address leaves no client at all.
    client = request.client
    address = forwarding.parse_address(client.host) if client is not None else None
    if not metrics.may_scrape_from(address, request.app.state.settings):
        raise ApiError(403, "metrics are for the metrics networks only")
    file_counts: FileCounts = request.app.state.file_counts
    body = metrics.exposition(await file_counts.families())
    return Response(body, media_type=metrics.CONTENT_TYPE)
