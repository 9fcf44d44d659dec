"""The portal's routers, one module per concern; ``create_app`` includes every one listed.

``ROUTERS`` are included in order; each of ``INSTALLERS`` is called with the app afterwards
(for middleware or ``app.state`` hooks such as ``principal_resolvers`` and ``html_error``).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI

from enforcement import api as enforcement_api
from portal import web
from portal.routes import health, iies_cases, queries, verify

ROUTERS: list[APIRouter] = [
    health.router,
    verify.router,
    queries.router,
    enforcement_api.router,
    iies_cases.router,
]
INSTALLERS: list[Callable[[FastAPI], None]] = []

# The browser pages (portal.web) bring their own routers and install step.
ROUTERS += web.ROUTERS
INSTALLERS.append(web.install)
