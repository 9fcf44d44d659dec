"""``create_app``: the portal's FastAPI application (pages + JSON API), kept small.

Routers come from :mod:`portal.routes` (one module per concern); long-lived resources — the
database engine, the pooled insurer clients, the query-log writer — live on the lifespan.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from anyio import CapacityLimiter
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bob_loader.intake_settings import IntakeSettings
from olv import db, libpq, read_replica, serving
from olv.config import Settings, get_settings
from olv.logging import describe_exception
from olv.readiness import Readiness
from portal import errors, passwords, routes, secret_key
from portal.cache import TtlCache
from portal.deps import current_principal
from portal.failed_lookups import FailedLookups
from portal.guard import RequestGuard
from portal.headers import ResponseHeaders
from portal.insurer_client import InsurerClient, Transport
from portal.metrics import FileCounts
from portal.observe import RequestObserver
from portal.querylog import QueryLogWriter
from portal.ratelimit import Bucket, SharedLimits
from portal.routes import verify as verify_route
from portal.routing import Router
from portal.secret_key import SecretKey
from portal.settings import PortalSettings, get_portal_settings
from portal.tokens import TokenOwner
from portal.verify_path import VerifyFastPath

HERE = Path(__file__).parent
log = logging.getLogger(__name__)
# A valid token is kept in each process's cache this long at most (a token in use is re-read
# in the background after TOKEN_RECHECK_SECONDS, which also records its use about once a
# minute). A revocation, a disable or a new role does not wait for either: every request
# reads the shared auth version (portal.deps), so a change reaches every process with its
# next request. The insurer registry is re-read every REGISTRY_CACHE_SECONDS.
TOKEN_CACHE_SECONDS = 60.0
TOKEN_RECHECK_SECONDS = 30.0
TOKEN_RECHECK_SPREAD = 0.5  # each token's re-read falls due 15–30 s after its read, at random
REGISTRY_CACHE_SECONDS = 5.0
# Rows of the shared rate limits that no longer matter are deleted this often.
FORGET_RATES_SECONDS = 600.0


def create_app(
    settings: Settings | None = None,
    portal_settings: PortalSettings | None = None,
    *,
    transport: Transport | None = None,
) -> FastAPI:
    """The portal; ``transport`` replaces the HTTP transport to insurers (tests)."""
    settings = settings or get_settings()
    portal_settings = portal_settings or get_portal_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.secret_key = secret_key.load(portal_settings)  # stops the start if unusable
        engine = db.make_engine(settings.database_url, **_connect_bound(settings.database_url))
        app.state.engine = engine
        app.state.sessions = db.session_factory(engine)
        await run_in_threadpool(passwords.dummy_hash)  # before the first sign-in needs it
        # In the background: the portal starts (and serves) while its database is down.
        sealing = asyncio.create_task(
            run_in_threadpool(_seal_plaintext_secrets, engine, app.state.secret_key)
        )
        app.state.insurer_client = InsurerClient(transport, portal_settings)
        app.state.readiness = Readiness(engine)
        app.state.file_counts = FileCounts(engine)
        app.state.query_log = QueryLogWriter(engine, portal_settings.query_log_days)
        app.state.query_log.start()
        # The plate and book-of-business look-ups may read a standby (OLV_DATABASE_READ_URL).
        replica = await run_in_threadpool(read_replica.from_settings, settings)
        app.state.router = router = Router(
            engine,
            app.state.insurer_client,
            app.state.query_log,
            settings,
            portal_settings,
            REGISTRY_CACHE_SECONDS,
            replica,
        )
        await router.open()
        app.state.rate_limits = SharedLimits(router.reads)
        forgetting = asyncio.create_task(_forget_old_rates(app.state.rate_limits, portal_settings))
        try:
            yield
        finally:
            forgetting.cancel()
            await sealing  # its connection goes back to the pool before the pool closes
            await app.state.insurer_client.aclose()
            await app.state.query_log.stop()
            await app.state.router.close()
            if replica is not None:
                await run_in_threadpool(replica.close)
            engine.dispose()

    app = FastAPI(
        title="OLV state portal",
        summary="Verify motor-vehicle liability insurance with the insurers, in five seconds.",
        version="1",
        lifespan=lifespan,
        **_without_opentelemetry(),
    )
    app.state.settings = settings
    app.state.portal_settings = portal_settings
    app.state.intake_settings = IntakeSettings()  # e-mail of web uploads (OLV_SMTP_*)
    app.state.principal_resolvers = []
    # A per-process guard of memory and CPU (portal.passwords): it delays a sign-in, never
    # changes its answer.
    app.state.hash_slots = asyncio.Semaphore(passwords.HASH_SLOTS)
    # One limit per API token and per signed-in account (OLV_PORTAL_TOKEN_RATE_PER_MINUTE),
    # shared by every process through the database (portal.ratelimit).
    app.state.request_bucket = Bucket(portal_settings.token_rate_per_minute)
    app.state.token_cache = TtlCache[str, TokenOwner](
        TOKEN_CACHE_SECONDS,
        refresh_after=TOKEN_RECHECK_SECONDS,
        refresh_spread=TOKEN_RECHECK_SPREAD,
    )
    # The background re-reads of cached tokens, one at a time (portal.deps).
    app.state.recheck_lane = CapacityLimiter(1)
    # Unknown tokens and session cookies per client address (portal.failed_lookups).
    app.state.failed_lookups = FailedLookups(portal_settings.failed_lookups_per_minute)
    app.state.auth_version = -1  # the shared version the cache is true for; none yet
    app.state.background_tasks = set()
    app.state.upload_limits = {}
    errors.install(app)
    app.mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static")
    for router in routes.ROUTERS:
        app.include_router(router)
    for install in routes.INSTALLERS:
        install(app)
    app.add_middleware(
        RequestGuard,
        settings=settings,
        uploads=app.state.upload_limits,
        authenticate=current_principal,
    )
    app.add_middleware(ResponseHeaders)
    app.add_middleware(RequestObserver)  # ids, counts and times every answer
    # Added last, the outermost: the hot path (POST /api/v1/verify) does what the three layers
    # above do for the requests it answers, and hands every other request to them.
    app.add_middleware(
        VerifyFastPath,
        settings=settings,
        uploads=app.state.upload_limits,
        route=verify_route.one_route(),
    )
    return app


async def _forget_old_rates(limits: SharedLimits, portal_settings: PortalSettings) -> None:
    """Delete the shared rate limits' rows that no longer matter, now and then; a failure (the
    database is down) is logged and tried again next time."""
    while True:
        await asyncio.sleep(FORGET_RATES_SECONDS)
        try:
            await limits.forget_old(portal_settings.budget_seconds)
        except Exception as exc:  # noqa: BLE001 - housekeeping must not end the loop
            log.warning("old rate-limit rows not deleted", extra=describe_exception(exc))


def _connect_bound(url: str) -> dict[str, Any]:
    """PostgreSQL: connections give up after libpq.CONNECT_TIMEOUT_SECONDS (see there)."""
    if db.is_sqlite(url):
        return {}
    return {"connect_args": {"connect_timeout": libpq.CONNECT_TIMEOUT_SECONDS}}


def _seal_plaintext_secrets(engine: Engine, key: SecretKey) -> None:
    """Encrypt TOTP secrets stored before encryption (or seeded by the demo). A failure (the
    database is down) is logged: the next start, or that person's next sign-in, encrypts them."""
    try:
        with db.transaction(engine) as session:
            sealed = secret_key.seal_plaintext_secrets(session, key)
    except SQLAlchemyError as exc:
        log.warning("TOTP secrets not encrypted at start", extra=describe_exception(exc))
        return
    if sealed:
        log.info("encrypted %d TOTP secrets stored in plaintext", sealed)


def factory() -> FastAPI:
    """For ``uvicorn --factory portal.app:factory`` (``olv portal serve`` uses it)."""
    app = create_app()
    serving.settle_gc()
    return app


def _without_opentelemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry bridge off, where the installed FastAPI has one: the portal
    reports through Prometheus (/metrics), and the bridge looked up the OpenTelemetry
    providers on every request to find none configured."""
    if "telemetry" not in inspect.signature(FastAPI).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
