"""``olv iies …``: insurer transactions in, dispositions out (SPEC §6). JSON on stdout, one
object a line; exit 0 success, 1 rejected, 2 usage."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from olv import db, errors, normalize
from olv.config import get_settings

iies_app = typer.Typer(
    help="Insurance enforcement: insurer transactions, dispositions, cases, letters.",
    no_args_is_help=True,
)


def _engine() -> Engine:
    return db.open_database(get_settings().database_url)


def _naic(value: str | None) -> str | None:
    if value is not None and not normalize.is_naic(value):
        raise errors.UsageError(f"--naic {value!r}: a NAIC is exactly 5 digits")
    return value


@iies_app.command("load")
def iies_load(
    file: Annotated[Path, typer.Argument(help="Transactions CSV (SPEC §6 header).")],
    naic: Annotated[
        str | None, typer.Option("--naic", help="The sender; default: the first row's naic.")
    ] = None,
) -> None:
    """Load one insurer's transactions; prints the acknowledgement (exit 1 if rejected)."""
    from enforcement.load import load

    sender = _naic(naic)
    errors.require_files([file])
    engine = _engine()
    try:
        ack = load(engine, file, name=file.name, channel="cli", sender_naic=sender)
    finally:
        engine.dispose()
    typer.echo(json.dumps(ack.as_dict()))
    if not ack.accepted:
        raise typer.Exit(1)


@iies_app.command("returns")
def iies_returns(
    naic: Annotated[str, typer.Option("--naic", help="The insurer.")],
    since: Annotated[
        str | None, typer.Option("--since", help="Only dispositions set on or after YYYY-MM-DD.")
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(
            "--outbox",
            help="Instead: write the dispositions not yet returned to this folder as one CSV "
            "(the SFTP outbox) and print its name.",
        ),
    ] = None,
) -> None:
    """One JSON line per transaction: txn_id, disposition, codes, plate."""
    from enforcement.returns import line, returns, write_outbox

    _naic(naic)
    if outbox is not None:
        if not outbox.is_dir():
            raise errors.UsageError(f"--outbox {outbox}: not a folder")
        engine = _engine()
        try:
            written = write_outbox(engine, naic, outbox)
        finally:
            engine.dispose()
        typer.echo(json.dumps({"outbox": str(written) if written else None}))
        return
    start: date | None = None
    if since is not None:
        try:
            start = date.fromisoformat(since)
        except ValueError:
            raise errors.UsageError(f"--since {since!r}: a date YYYY-MM-DD") from None
    engine = _engine()
    try:
        for txn in returns(engine, naic, start):
            typer.echo(json.dumps(line(txn)))
    finally:
        engine.dispose()


def _register_case_commands() -> None:
    # run, case, proof, letters, undeliverable: the case side lives in its own module.
    from enforcement import case_cli

    case_cli.register(iies_app)


_register_case_commands()
