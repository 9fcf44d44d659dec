"""The insurer registry: whom the portal asks for a NAIC (``olv insurers``, admin pages)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from olv import normalize
from olv.errors import OlvError
from olv.iicmva import VERSIONS
from portal import security_log
from portal.models import Insurer


class RegistryError(OlvError):
    """The registration was refused; the message names the field at fault."""

    exit_code = 2


@dataclass(frozen=True)
class InsurerInput:
    """One insurer's registration: what ``olv insurers add`` and the admin page submit
    (:func:`check` validates it), and, read back from its row, what the portal calls the
    insurer with (:class:`portal.insurer_client.InsurerConfig` is this class)."""

    naic: str
    name: str
    url: str
    version: str
    accepts_unknown: bool = False
    client_cert: str | None = None
    client_key: str | None = None
    ca_bundle: str | None = None
    timeout_seconds: float | None = None
    enabled: bool = True

    @classmethod
    def from_row(cls, row: Insurer) -> InsurerInput:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


def _readable(label: str, path: str | None) -> str | None:
    if path is None:
        return None
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise RegistryError(f"{label}: {path} is not a readable file")
    return str(resolved)


def check(data: InsurerInput) -> InsurerInput:
    """Validated and normalized (file paths made absolute), or :class:`RegistryError`."""
    if not normalize.is_naic(data.naic):
        raise RegistryError(f"--naic: {data.naic!r} must be five digits")
    if not data.name.strip() or len(data.name) > 200:
        raise RegistryError("--name: 1 to 200 characters")
    parts = urlsplit(data.url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(data.url) > 500:
        raise RegistryError(f"--url: {data.url!r} is not an http(s) URL")
    if data.version not in VERSIONS:
        raise RegistryError(f"--version: {data.version!r}; expected one of {', '.join(VERSIONS)}")
    if data.client_key and not data.client_cert:
        raise RegistryError("--client-key needs --client-cert")
    if data.timeout_seconds is not None and not 0 < data.timeout_seconds <= 60:
        raise RegistryError("--timeout: seconds between 0 and 60")
    if (data.client_cert or data.ca_bundle) and parts.scheme != "https":
        raise RegistryError("--client-cert/--ca-bundle need an https URL")
    return InsurerInput(
        naic=data.naic,
        name=data.name.strip(),
        url=data.url,
        version=data.version,
        accepts_unknown=data.accepts_unknown,
        client_cert=_readable("--client-cert", data.client_cert),
        client_key=_readable("--client-key", data.client_key),
        ca_bundle=_readable("--ca-bundle", data.ca_bundle),
        timeout_seconds=data.timeout_seconds,
        enabled=data.enabled,
    )


def upsert(
    session: Session, data: InsurerInput, *, actor: str = "cli", source: str | None = None
) -> tuple[Insurer, bool]:
    """Add the insurer, or update it when its NAIC is registered; returns (row, created).

    Two registrations of the same new NAIC at once (two admins, the page and the command line)
    both find no row; the second's insert then meets the first's row (on PostgreSQL it waits
    for the first to commit, on SQLite for the write lock) and inserts nothing, and the second
    updates that row instead: as if they had come one after the other, never a failed insert.
    """
    data = check(data)
    now = datetime.now(UTC)
    row = session.get(Insurer, data.naic)
    created = False
    if row is None:
        created = _insert_new(session, data, now)
        row = session.get(Insurer, data.naic, populate_existing=True)
        assert row is not None  # inserted now, or by the registration that came first
    for field in fields(InsurerInput):
        if field.name != "naic":
            setattr(row, field.name, getattr(data, field.name))
    row.updated_at = now
    security_log.record(
        session,
        security_log.INSURER_CHANGED,
        username=actor,
        detail=f"{'added' if created else 'updated'} insurer {data.naic}",
        source=source,
    )
    return row, created


def _insert_new(session: Session, data: InsurerInput, now: datetime) -> bool:
    """Insert the insurer unless its NAIC has a row by now; whether it did."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    values = {field.name: getattr(data, field.name) for field in fields(InsurerInput)}
    statement = (
        dialect.insert(Insurer)
        .values(**values, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=[Insurer.naic])
        .returning(Insurer.naic)  # not the row count: -1 for this INSERT on psycopg
    )
    return session.execute(statement).first() is not None


def as_dict(row: Insurer) -> dict[str, Any]:
    return {
        "naic": row.naic,
        "name": row.name,
        "url": row.url,
        "version": row.version,
        "accepts_unknown": row.accepts_unknown,
        "client_cert": row.client_cert,
        "client_key": row.client_key,
        "ca_bundle": row.ca_bundle,
        "timeout": row.timeout_seconds,
        "enabled": row.enabled,
    }


def all_insurers(session: Session) -> list[Insurer]:
    return list(session.scalars(select(Insurer).order_by(Insurer.naic)))
