"""Admin: the insurer registry — list, add and edit (the same rules as ``olv insurers add``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from olv.iicmva import V0809, VERSIONS
from portal import registry
from portal.deps import DbSession, InsurerAdmin, client_address
from portal.errors import ApiError
from portal.models import Insurer
from portal.web.render import flash, page, see_other, twin_get

router = APIRouter(include_in_schema=False)


def _render(
    request: Request,
    db: Session,
    form: dict[str, Any] | None = None,
    *,
    editing: bool = False,
    status: int = 200,
) -> Response:
    with db.begin():
        rows = [_row(i) for i in registry.all_insurers(db)]
    view = {
        "form": form or {"version": V0809, "enabled": True},
        "editing": editing,
        "versions": VERSIONS,
    }
    return page(
        request, "admin_insurers.html", "Insurer registry", {"insurers": rows}, view, status=status
    )


def _row(insurer: Insurer) -> dict[str, Any]:
    row = registry.as_dict(insurer)
    row["timeout_seconds"] = row.pop("timeout")
    return row


@twin_get(router, "/admin/insurers")
def list_insurers(request: Request, db: DbSession, me: InsurerAdmin) -> Response:
    return _render(request, db)


@twin_get(router, "/admin/insurers/{naic}")
def edit_insurer(request: Request, db: DbSession, me: InsurerAdmin, naic: str) -> Response:
    with db.begin():
        insurer = db.get(Insurer, naic)
        if insurer is None:
            raise ApiError(404, f"no insurer with NAIC {naic}")
        form = _row(insurer)
    return _render(request, db, form, editing=True)


def _optional(text: str) -> str | None:
    return text.strip() or None


@router.post("/admin/insurers")
def save_insurer(
    request: Request,
    db: DbSession,
    me: InsurerAdmin,
    naic: Annotated[str, Form(max_length=5)] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    url: Annotated[str, Form(max_length=500)] = "",
    version: Annotated[str, Form(max_length=8)] = V0809,
    timeout_seconds: Annotated[str, Form(max_length=10)] = "",
    client_cert: Annotated[str, Form(max_length=500)] = "",
    client_key: Annotated[str, Form(max_length=500)] = "",
    ca_bundle: Annotated[str, Form(max_length=500)] = "",
    accepts_unknown: Annotated[bool, Form()] = False,
    enabled: Annotated[bool, Form()] = False,
) -> Response:
    form: dict[str, Any] = {
        "naic": naic.strip(),
        "name": name,
        "url": url.strip(),
        "version": version,
        "timeout_seconds": timeout_seconds,
        "client_cert": client_cert,
        "client_key": client_key,
        "ca_bundle": ca_bundle,
        "accepts_unknown": accepts_unknown,
        "enabled": enabled,
    }
    try:
        timeout = float(timeout_seconds) if timeout_seconds.strip() else None
    except ValueError:
        flash(request, "error", "Timeout: a number of seconds, or empty for the whole budget.")
        return _render(request, db, form, status=422)
    data = registry.InsurerInput(
        naic=form["naic"],
        name=name,
        url=form["url"],
        version=version,
        accepts_unknown=accepts_unknown,
        client_cert=_optional(client_cert),
        client_key=_optional(client_key),
        ca_bundle=_optional(ca_bundle),
        timeout_seconds=timeout,
        enabled=enabled,
    )
    try:
        with db.begin():
            registry.upsert(db, data, actor=me.username, source=client_address(request))
    except registry.RegistryError as exc:
        # The registry speaks in command-line option names; the form's labels say the same.
        flash(request, "error", f"Not saved: {str(exc).replace('--', '')}.")
        return _render(request, db, form, status=422)
    request.app.state.router.registry_cache.clear()  # the next query sees the change
    return see_other("/admin/insurers")
