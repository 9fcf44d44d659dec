"""The permissions table (portal/permissions.py) against the real app: every route, every role.

The expectations are derived from the table alone: a role the table gives a route's action
gets anything but 401/403 (and never a server error); every other role gets exactly 403; a
route that no action guards must be one of the public ones listed here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import CheckConstraint

from portal import permissions, routes
from portal.models import User
from portal.permissions import Action, Role
from portal.web.render import NAV, home_for
from tests.helpers.portal_web import (
    SAME_ORIGIN,
    Clock,
    add_user,
    portal_client,
    sign_in,
    sqlite_copy,
)

# Reachable without signing in: the sign-in steps, the landing redirect, health and API docs.
PUBLIC = {
    "/",
    "/login",
    "/login/enrol",
    "/login/totp",
    "/logout",
    "/healthz",
    "/readyz",
    "/metrics",  # no account (Prometheus scrapes without one): OLV_METRICS_NETWORKS guards it
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/iies/status",  # the public case status page (rate-limited; SPEC §6)
    "/iies/status.json",
}
# Path parameters filled with values that name nothing: an allowed role gets 404 or 422, and
# no request of the walk changes a stored row.
PATH_VALUES = {
    "naic": "99999",
    "user_id": "999999",
    "token_id": "nosuchtoken00000",
    "file_id": "999999",
    "query_id": "0" * 32,
}


def _action(route: APIRoute) -> Action | None:
    """The action whose ``deps.permitted`` check guards the route (None: no check)."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        action = getattr(dependant.call, "action", None)
        if isinstance(action, Action):
            return action
        pending.extend(dependant.dependencies)
    return None


def _routes() -> list[tuple[str, str, Action | None]]:
    """Every (method, path, action) of the routers ``create_app`` includes (with no prefix)."""
    found = []
    for router in routes.ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute), route
            for method in sorted(route.methods - {"HEAD"}):
                found.append((method, route.path, _action(route)))
    return found


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return sqlite_copy(sqlite_template, tmp_path, monkeypatch)


def test_every_route_is_guarded_by_an_action_or_listed_as_public() -> None:
    assert len(_routes()) > 30
    unguarded = {path for _, path, action in _routes() if action is None}
    assert unguarded <= PUBLIC, sorted(unguarded - PUBLIC)
    guarded = {path for _, path, action in _routes() if action is not None}
    assert not guarded & PUBLIC


def _request(client: TestClient, method: str, path: str) -> int:
    url = _url(path)
    if method == "GET":
        return client.get(url).status_code
    if path.startswith("/api/"):
        return client.post(url, json={}, headers=SAME_ORIGIN).status_code
    return client.post(url, data={}, headers=SAME_ORIGIN).status_code


def _sign_in_as(client: TestClient, clock: Clock, url: str, role: Role) -> None:
    client.cookies.clear()
    username = f"walk-{role.value}"
    add_user(url, username, role.value, "12345" if role is Role.INSURER else None)
    sign_in(client, clock, username)


def test_every_route_answers_every_role_as_the_table_says(sqlite_url: str) -> None:
    routes = [(m, p, a) for m, p, a in _routes() if a is not None]
    assert len(routes) >= 20  # the walk sees the app's routes, not an empty list
    seen_actions = {a.name for _, _, a in routes}
    assert seen_actions == set(permissions.table()), "an action guards no route"
    with portal_client(sqlite_url) as (client, clock):
        for role in Role:
            _sign_in_as(client, clock, sqlite_url, role)
            for method, path, action in routes:
                assert action is not None
                status = _request(client, method, path)
                where = (role.value, method, path, action.name, status)
                if action.allows(role):
                    assert status not in (401, 403) and status < 500, where
                else:
                    assert status == 403, where


def test_anonymous_callers_are_sent_to_sign_in_or_refused(sqlite_url: str) -> None:
    routes = [(m, p) for m, p, a in _routes() if a is not None]
    with portal_client(sqlite_url) as (client, _):
        for method, path in routes:
            status = _request(client, method, path)
            # the pages redirect a browser to /login; the JSON API answers 401
            assert status in (303, 401), (method, path, status)


def test_the_menu_shows_each_role_exactly_the_pages_the_table_allows() -> None:
    for role in Role:
        shown = {item.href for item in NAV if item.action.allows(role)}
        expected = {
            item.href for item in NAV if role in permissions.table()[item.action.name].roles
        }
        assert shown == expected
        assert home_for(role) in shown
    assert {item.action.name for item in NAV} <= set(permissions.table())


def test_the_role_check_constraint_lists_the_roles_of_the_table() -> None:
    (check,) = [c for c in User.__table__.constraints if isinstance(c, CheckConstraint)]
    assert str(check.sqltext) == "role IN ('officer', 'court', 'dmv', 'insurer', 'admin')"
    assert tuple(Role) == tuple(permissions.ROLES)


def test_the_table_says_what_spec_section_5_says() -> None:
    # Written out once here, as the specification: officers and courts verify one at a time,
    # the DMV also in batches, insurer liaisons see their book of business and service health,
    # administrators do everything.
    everyone_but_insurers = {"officer", "court", "dmv", "admin"}
    expected = {
        "verify": everyone_but_insurers,
        "verify_batch": {"dmv", "admin"},
        "read_queries": everyone_but_insurers,
        "book_of_business": {"insurer", "admin"},
        "compliance": {"insurer", "admin"},
        "manage_insurers": {"admin"},
        "manage_users": {"admin"},
        "manage_tokens": {"admin"},
    }
    table = permissions.table()
    assert {name: set(table[name].roles) for name in expected} == expected


def test_an_action_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        permissions.register(permissions.VERIFY.name, Role.ADMIN)
    assert permissions.table()["verify"] is permissions.VERIFY


def test_row_rules_own_queries_admins_any_liaisons_own_naic() -> None:
    from portal.deps import Principal

    officer = Principal(1, "ann", "officer", None, "session")
    liaison = Principal(2, "bob", "insurer", "12345", "session")
    admin = Principal(3, "cy", "admin", None, "session")
    assert permissions.may_read_query(officer, "ann")
    assert not permissions.may_read_query(officer, "someone-else")
    assert permissions.may_read_query(admin, "someone-else")
    assert permissions.visible_naics(liaison) == frozenset({"12345"})
    assert permissions.visible_naics(officer) == frozenset()
    assert permissions.visible_naics(admin) is None
