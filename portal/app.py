"""``create_app``: the portal's FastAPI application (pages + JSON API), kept small.

Routers come from :mod:`portal.routes` (one module per concern); long-lived resources — the
database engine, the pooled insurer clients, the query-log writer — live on the lifespan.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from olv import db
from olv.config import Settings, get_settings
from portal import errors, routes
from portal.insurer_client import InsurerClient, Transport
from portal.querylog import QueryLogWriter
from portal.ratelimit import RateLimiter
from portal.routing import Router
from portal.settings import PortalSettings, get_portal_settings

HERE = Path(__file__).parent


class ReceivedAt:
    """Stamps each request with the moment it arrived: the 5-second budget starts there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["received"] = time.monotonic()
        await self.app(scope, receive, send)


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
        engine = db.make_engine(settings.database_url)
        app.state.engine = engine
        app.state.sessions = db.session_factory(engine)
        app.state.insurer_client = InsurerClient(transport, portal_settings)
        app.state.query_log = QueryLogWriter(engine)
        app.state.query_log.start()
        app.state.router = Router(
            app.state.sessions,
            app.state.insurer_client,
            app.state.query_log,
            settings,
            portal_settings,
        )
        try:
            yield
        finally:
            await app.state.insurer_client.aclose()
            await app.state.query_log.stop()
            engine.dispose()

    app = FastAPI(
        title="OLV state portal",
        summary="Verify motor-vehicle liability insurance with the insurers, in five seconds.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.portal_settings = portal_settings
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.state.principal_resolvers = []
    app.state.token_limiter = RateLimiter(portal_settings.token_rate_per_minute)
    errors.install(app)
    app.add_middleware(ReceivedAt)
    app.mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static")
    for router in routes.ROUTERS:
        app.include_router(router)
    for install in routes.INSTALLERS:
        install(app)
    return app


def factory() -> FastAPI:
    """For ``uvicorn --factory portal.app:factory`` (``olv portal serve`` uses it)."""
    return create_app()
