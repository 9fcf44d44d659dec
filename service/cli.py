"""``olv policies``, ``olv soap``, ``olv audit`` and ``olv demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from olv import db
from olv.config import get_settings

policies_app = typer.Typer(help="Insurer policy store.", no_args_is_help=True)
soap_app = typer.Typer(help="Insurer SOAP verification service.", no_args_is_help=True)
audit_app = typer.Typer(help="Audit trail of SOAP queries.", no_args_is_help=True)


@policies_app.command("import")
def policies_import(
    files: list[Path] = typer.Argument(..., help="BoB .txt files or CSV files with a header row"),
) -> None:
    """Import policies; bad rows are reported with line numbers and skipped (one transaction)."""
    from service.policy_import import ImportFileError, import_files

    engine = db.make_engine(get_settings().database_url)
    try:
        results = import_files(engine, files)
    except ImportFileError as exc:
        typer.echo(f"error: {exc}; nothing was imported", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    for result in results:
        for issue in result.issues:
            typer.echo(f"{result.path}: {issue.report_line()}", err=True)
        typer.echo(
            f"{result.path}: {result.rows} coverage rows on {result.policies} policies imported, "
            f"{len(result.errors)} rows skipped"
        )


def demo() -> None:
    """Migrate an SQLite database, load demo data and serve SOAP (and later the portal)."""
    raise NotImplementedError
