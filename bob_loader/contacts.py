"""Insurer contacts per NAIC: who receives the error reports."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from bob_loader.models import InsurerContact
from olv import normalize
from olv.errors import OlvError


class ContactError(OlvError):
    """A contact that cannot be stored (bad NAIC or e-mail address)."""

    exit_code = 2


class ContactNotFound(OlvError):
    """No such contact to remove."""

    exit_code = 1


def add_contact(conn: Connection, naic: str, email: str, name: str | None) -> None:
    """Add (or, for a known NAIC and address, rename) a contact."""
    naic, email = naic.strip(), email.strip()
    if not normalize.is_naic(naic):
        raise ContactError(f"NAIC {naic!r} must be 5 digits")
    local, at, domain = email.partition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in email):
        raise ContactError(f"{email!r} is not an e-mail address")
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(InsurerContact).values(naic=naic, email=email, name=name)
    conn.execute(stmt.on_conflict_do_update(index_elements=["naic", "email"], set_={"name": name}))


def list_contacts(conn: Connection, naic: str | None = None) -> Iterator[dict[str, Any]]:
    query = select(InsurerContact.naic, InsurerContact.name, InsurerContact.email).order_by(
        InsurerContact.naic, InsurerContact.email
    )
    if naic is not None:
        query = query.where(InsurerContact.naic == naic)
    for row in conn.execute(query).mappings():
        yield dict(row)


def remove_contact(conn: Connection, naic: str, email: str) -> None:
    """Remove the contact ``email`` of ``naic``; raises :class:`ContactNotFound` if there is none
    (a typo must not look like a removal)."""
    naic, email = naic.strip(), email.strip()
    stmt = delete(InsurerContact).where(InsurerContact.naic == naic, InsurerContact.email == email)
    if conn.execute(stmt).rowcount == 0:
        raise ContactNotFound(f"no contact {email!r} for NAIC {naic!r}")
