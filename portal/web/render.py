"""Rendering pages and their JSON twins from one context (the Datasette habit).

A page view builds ``data`` (plain, JSON-ready values: what the page says) and, separately,
``view`` (presentation only: forms, charts, labels). ``/path`` renders the template with both;
``/path.json`` answers ``data`` alone — so what a person reads and what a program reads come from
the same values and cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from enforcement.permissions import IIES_INQUIRY, IIES_PROOF, IIES_REPORTS, IIES_STATEWIDE
from portal import permissions
from portal.permissions import Action

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FLASH_KEY = "flashes"


@dataclass(frozen=True)
class NavItem:
    """A menu entry, shown to the roles that :mod:`portal.permissions` gives its action."""

    href: str
    label: str
    action: Action


NAV = (
    NavItem("/query", "Query", permissions.VERIFY),
    NavItem("/cards/check", "Check a card", permissions.CHECK_CARDS),
    NavItem("/batch", "Batch", permissions.VERIFY_BATCH),
    NavItem("/history", "History", permissions.READ_QUERIES),
    NavItem("/bob", "Book of business", permissions.BOOK_OF_BUSINESS),
    NavItem("/compliance", "Compliance", permissions.COMPLIANCE),
    NavItem("/iies/inquiry", "Enforcement", IIES_INQUIRY),
    NavItem("/iies/proof", "Paper proof", IIES_PROOF),
    NavItem("/iies/reports", "Filing reports", IIES_REPORTS),
    NavItem("/iies/statewide", "State-wide", IIES_STATEWIDE),
    NavItem("/admin/insurers", "Insurers", permissions.MANAGE_INSURERS),
    NavItem("/admin/users", "Users", permissions.MANAGE_USERS),
    NavItem("/admin/tokens", "Tokens", permissions.MANAGE_TOKENS),
)


def home_for(role: str) -> str:
    """The first page a role may see (where ``/`` and a fresh login lead)."""
    for item in NAV:
        if item.action.allows(role):
            return item.href
    return "/login"


@cache
def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(TEMPLATES))


def wants_json(request: Request) -> bool:
    return request.url.path.endswith(".json")


def flash(request: Request, kind: str, text: str) -> None:
    """A message for the page rendered in this request."""
    request.state.__dict__.setdefault(FLASH_KEY, []).append((kind, text))


def page(
    request: Request,
    template: str,
    title: str,
    data: Mapping[str, Any] | None = None,
    view: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> Response:
    """The page, or its JSON twin when the path ends in ``.json``."""
    data = dict(data or {})
    if wants_json(request):
        return JSONResponse(jsonable_encoder(data), status_code=status)
    me = getattr(request.state, "principal", None)
    path = request.url.path
    nav = [
        {"href": item.href, "label": item.label, "current": path.startswith(item.href)}
        for item in NAV
        if me is not None and item.action.allows(me.role)
    ]
    context = {
        "title": title,
        "me": me,
        "nav": nav,
        "flashes": request.state.__dict__.get(FLASH_KEY, []),
        **data,
        **(view or {}),
    }
    return templates().TemplateResponse(request, template, context, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {401: "Please sign in", 403: "Not allowed", 404: "Not found", 429: "Slow down"}
    response = templates().TemplateResponse(
        request,
        "error.html",
        {
            "title": titles.get(status, "Something went wrong"),
            "message": message,
            "me": getattr(request.state, "principal", None),
            "nav": [],
            "flashes": [],
        },
        status_code=status,
    )
    assert isinstance(response, HTMLResponse)
    return response


View = Callable[..., Any]


def twin_get(router: APIRouter, path: str, **kwargs: Any) -> Callable[[View], View]:
    """Register a GET view at ``path`` and at ``path.json``."""

    def register(view: View) -> View:
        router.get(path, response_class=HTMLResponse, include_in_schema=False, **kwargs)(view)
        router.get(path + ".json", include_in_schema=False, **kwargs)(view)
        return view

    return register


def see_other(url: str) -> RedirectResponse:
    """Post/redirect/get: after a change, show the list again (a reload repeats nothing)."""
    return RedirectResponse(url, status_code=303)
