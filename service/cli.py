"""``olv policies``, ``olv soap``, ``olv audit`` and ``olv bob export``.

``olv bob export`` belongs with the other ``olv bob`` commands for the operator, but it reads the
insurer store, so it is defined here and the composition root (``olv.cli``) adds it to the BoB
command group: neither package imports the other.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from olv import db, errors, read_replica
from olv.config import get_settings

policies_app = typer.Typer(help="Insurer policy store.", no_args_is_help=True)
soap_app = typer.Typer(help="Insurer SOAP verification service.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit trail of SOAP queries.", no_args_is_help=True)

Host = Annotated[str, typer.Option(help="Address to listen on.")]
Port = Annotated[int, typer.Option(help="TCP port (1-65535).")]


@policies_app.command("import")
def policies_import(
    files: Annotated[
        list[Path], typer.Argument(help="BoB .txt files or CSV files with a header row")
    ],
) -> None:
    """Import policies; bad rows are reported with line numbers and skipped (one transaction)."""
    from service.policy_import import import_files

    def report(path: Path, issue: object) -> None:
        typer.echo(f"{path}: {issue.report_line()}", err=True)  # type: ignore[attr-defined]

    errors.require_files(files)
    engine = db.open_database(get_settings().database_url)
    try:
        results = import_files(engine, files, on_issue=report)
    finally:
        engine.dispose()
    for result in results:
        typer.echo(
            f"{result.path}: {result.rows} coverage rows on {result.policies} policies imported, "
            f"{result.skipped} rows skipped"
        )


def bob_export(
    naic: Annotated[str, typer.Option("--naic", help="The NAIC whose book to write")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The file to write")],
) -> None:
    """Write the monthly BoB file for a NAIC from the insurer policy store."""
    from service.bob_export import export_file

    errors.require_output_file(output)
    engine = db.open_database(get_settings().database_url)
    try:
        today = datetime.now(get_settings().zone).date()
        count = export_file(engine, naic, output, today)
    finally:
        engine.dispose()
    typer.echo(f"{output}: {count} records for NAIC {naic}")


@soap_app.command("serve")
def soap_serve(
    host: Host = "127.0.0.1",
    port: Port = 8080,
    workers: Annotated[
        int,
        typer.Option(help="Worker processes (0: OLV_SOAP_WORKERS, else one per core).", min=0),
    ] = 0,
) -> None:
    """Serve /iicmva/00200510, /iicmva/00200809 and the auto-detecting /iicmva."""
    from olv.ports import claim_port
    from service.server import serve

    settings = get_settings()
    # Everything that can be refused is checked before the banner claims the service is up.
    with claim_port(host, port) as claim:
        _check_database(settings.database_url)
        read_replica.check_read_url(settings)
        typer.echo(f"OLV SOAP service on http://{host}:{port}/iicmva (WSDL: ?wsdl)", err=True)
        serve(settings, claim, workers or None)


def _check_database(url: str) -> None:
    """Refuse a database without the OLV schema; a PostgreSQL server that is down only delays.

    The service is meant to outlive database outages (requests are answered SYSU until the
    server is back), so a down server at start-up is a warning. A SQLite file that cannot be
    opened is a configuration mistake, refused like a missing schema.
    """
    try:
        db.open_database(url, wait_seconds=get_settings().deadline_seconds).dispose()
    except errors.DatabaseUnreachable as exc:
        if db.is_sqlite(url):
            raise
        typer.echo(f"warning: {exc}; serving anyway, answering SYSU until it is back", err=True)


def _parse_day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD)") from None


@audit_app.command("show")
def audit_show(
    vin: Annotated[str | None, typer.Option(help="Only queries for this VIN.")] = None,
    since: Annotated[str | None, typer.Option(help="Only queries on or after YYYY-MM-DD.")] = None,
) -> None:
    """Print audit rows as JSON lines, oldest first."""
    from service.audit import show

    day = _parse_day(since)
    engine = db.open_database(get_settings().database_url)
    try:
        for line in show(engine, vin=vin, since=day):
            typer.echo(line)
    finally:
        engine.dispose()


@audit_app.command("purge")
def audit_purge(
    older_than: Annotated[
        int | None,
        typer.Option(
            "--older-than", help="Age in days (default: OLV_AUDIT_RETENTION_DAYS).", min=0
        ),
    ] = None,
) -> None:
    """Delete audit rows older than DAYS days (run daily, e.g. from cron)."""
    from service.audit import purge

    settings = get_settings()
    if older_than is None:
        older_than = settings.audit_retention_days
    engine = db.open_database(settings.database_url)
    try:
        removed = purge(engine, older_than)
    finally:
        engine.dispose()
    typer.echo(f"{removed} audit rows older than {older_than} days removed")
