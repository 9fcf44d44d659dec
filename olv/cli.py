"""The ``olv`` command: one entry point for every part of OLV (SPEC §3).

Each product package contributes its own Typer sub-application; this module only wires them.
"""

from __future__ import annotations

import typer

from olv import db
from olv.config import get_settings
from olv.logging import configure as configure_logging

app = typer.Typer(
    help="OLV — IICMVA online insurance verification: SOAP service, BoB loader, state portal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Alembic revision")) -> None:
    """Create or migrate the schema (Alembic)."""
    url = get_settings().database_url
    db.upgrade(url, revision)
    typer.echo(f"database at revision {revision}")


def _register() -> None:
    from bob_loader.cli import bob_app
    from portal.cli import insurers_app, portal_app, registrations_app, tokens_app, users_app
    from service.cli import audit_app, demo, policies_app, soap_app

    app.add_typer(policies_app, name="policies")
    app.add_typer(soap_app, name="soap")
    app.add_typer(audit_app, name="audit")
    app.add_typer(bob_app, name="bob")
    app.add_typer(portal_app, name="portal")
    app.add_typer(insurers_app, name="insurers")
    app.add_typer(registrations_app, name="registrations")
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.command("demo")(demo)


_register()


def main() -> None:
    configure_logging()
    app()
