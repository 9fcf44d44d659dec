"""``olv issuers …`` (the state's registry of ID-card issuers) and ``olv cards verify``."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from olv import db
from olv.config import get_settings
from olv.errors import UsageError, require_files

issuers_app = typer.Typer(help="ID-card issuers and their keys (state).", no_args_is_help=True)
issuer_keys_app = typer.Typer(help="An issuer's public keys.", no_args_is_help=True)
issuers_app.add_typer(issuer_keys_app, name="key")


@contextlib.contextmanager
def _session() -> Iterator[Session]:
    """One transaction; a refused registration rolls back and ends the command (exit 2)."""
    from portal.card_issuers import IssuerError

    engine = db.open_database(get_settings().database_url)
    try:
        with db.transaction(engine) as session:
            yield session
    except IssuerError as exc:
        raise UsageError(str(exc)) from None
    finally:
        engine.dispose()


@issuers_app.command("add")
def issuers_add(
    name: Annotated[str, typer.Option(help="The licensee's or insurer's name.")],
    license: Annotated[
        str | None, typer.Option("--license", help="DFS licence number (agent, broker).")
    ] = None,
    icc: Annotated[str | None, typer.Option(help="3-digit DMV insurer code (insurer).")] = None,
    naic: Annotated[
        str | None, typer.Option(help="The insurer's NAIC (its liaisons see it).")
    ] = None,
) -> None:
    """Register who may issue ID cards; adding an existing issuer updates it."""
    from portal.card_issuers import IssuerError, add_issuer, issuer_code

    try:
        code, kind = issuer_code(license, icc)
    except IssuerError as exc:
        raise UsageError(str(exc)) from None
    with _session() as session:
        created = add_issuer(session, code, kind, name, naic, actor="cli")
    typer.echo(f"issuer {code} {'added' if created else 'updated'}")


@issuers_app.command("list")
def issuers_list(
    naic: Annotated[str | None, typer.Option(help="Only the issuers of this NAIC.")] = None,
) -> None:
    """The issuers and their keys as JSON lines."""
    from portal.card_issuers import issuers

    with _session() as session:
        for row in issuers(session, naic):
            typer.echo(json.dumps(row))


@issuer_keys_app.command("add")
def issuer_key_add(
    issuer: Annotated[str, typer.Argument(help="Licence number or ICC of a registered issuer.")],
    file: Annotated[Path, typer.Argument(help="The public key file from 'olv cards keygen'.")],
) -> None:
    """Register one of an issuer's public keys (an issuer may have several)."""
    from idcards.keys import load_public
    from portal.card_issuers import add_key

    require_files([file])
    public = load_public(file)
    with _session() as session:
        kid = add_key(session, issuer, public, actor="cli")
    typer.echo(f"key {kid} added for {issuer.strip().upper()}")


@issuer_keys_app.command("revoke")
def issuer_key_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (16 hex digits).")],
    reason: Annotated[str, typer.Option(help="compromised or retired.")],
) -> None:
    """Revoke a key: compromised (its cards dated from today on are refused) or retired."""
    from portal.card_issuers import revoke_key

    with _session() as session:
        row = revoke_key(session, key_id, reason, actor="cli")
        kid = row.key_id
    typer.echo(f"key {kid} revoked ({reason})")


def cards_verify(
    source: Annotated[str, typer.Argument(help="A photo, scan or PDF of a card, or - for text.")],
) -> None:
    """Check a card: exit 0 valid, 1 not valid, 2 cannot read. Prints the answer as JSON."""
    from idcards import decode
    from idcards.errors import CannotRead
    from idcards.verify import verify_text
    from portal.card_issuers import lookup

    if source == "-":
        text = sys.stdin.read(decode.MAX_UPLOAD_BYTES)
    else:
        path = Path(source)
        require_files([path])
        found = decode.texts_from_file(path)
        if not found:
            raise CannotRead(
                f"{path}: no PDF-417 barcode found (hold the camera straight and close)"
            )
        text = found[0]
    engine = db.open_database(get_settings().database_url)
    try:
        with db.session_factory(engine)() as session:
            answer = verify_text(text, lambda kid: lookup(session, kid), datetime.now(UTC).date())
    finally:
        engine.dispose()
    typer.echo(json.dumps(answer))
    if not answer["valid"]:
        raise typer.Exit(1)
