"""The ``olv`` command: one entry point for every part of OLV (SPEC §3), and the composition root.

Each product package contributes its own Typer sub-application; this module wires them, runs
the demo (which needs the insurer's service and the state portal together) and, in
:func:`main`, turns every known failure into one ``error: …`` line on stderr (``olv.errors``).

This module, ``olv/__main__.py`` and Alembic's ``olv/migrations/env.py`` are the only places
of the core that import product packages (``tests/test_layout_boundaries.py`` holds it); the
product packages never import each other's command groups.
"""

from __future__ import annotations

import os
import sys
import traceback
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from olv import db, failures
from olv.config import get_settings
from olv.iicmva import V0809
from olv.logging import configure as configure_logging
from olv.logging import describe_exception

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
    db.upgrade(get_settings().database_url, revision)
    typer.echo(f"database at revision {revision}")


def _register() -> None:
    from bob_loader.cli import bob_app
    from enforcement.cli import iies_app
    from idcards.cli import cards_app
    from portal.card_cli import cards_verify, issuers_app
    from portal.cli import insurers_app, portal_app, registrations_app, tokens_app, users_app
    from service.cli import audit_app, bob_export, policies_app, soap_app

    bob_app.command("export")(bob_export)  # the BoB group, fed from the insurer's store
    app.add_typer(policies_app, name="policies")
    app.add_typer(soap_app, name="soap")
    app.add_typer(audit_app, name="audit")
    app.add_typer(bob_app, name="bob")
    app.add_typer(portal_app, name="portal")
    app.add_typer(insurers_app, name="insurers")
    app.add_typer(registrations_app, name="registrations")
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(issuers_app, name="issuers")
    cards_app.command("verify")(cards_verify)
    app.add_typer(cards_app, name="cards")
    app.add_typer(iies_app, name="iies")
    app.command("demo")(demo)


def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (1-65535).")] = 8080,
    portal_port: Annotated[int, typer.Option(help="TCP port of the state portal.")] = 8000,
) -> None:
    """One command: migrate the SQLite database, load demo data, serve SOAP and the portal."""
    import subprocess

    from enforcement import demo as iies_demo
    from olv.ports import claim_port
    from portal import card_demo
    from portal import demo as portal_demo
    from service import demo as demo_data
    from service.server import serve

    settings = get_settings()
    # First: a taken port leaves no database or file behind.
    claim = claim_port(host, port)
    claim_port(host, portal_port).close()  # free now; the portal process binds it below
    db.upgrade(settings.database_url)
    today = datetime.now(settings.zone).date()
    engine = db.make_engine(settings.database_url)
    soap_base = f"http://{host}:{port}"
    try:
        count = demo_data.load(engine, today)
        bob_file = demo_data.export_bob(engine, today, Path("olv-demo-bob"))
        portal_demo.seed(engine, soap_base, demo_data.DEMO_NAIC, Path.cwd(), [bob_file])
        card_files = card_demo.seed(
            engine,
            Path.cwd(),
            demo_data.DEMO_NAIC,
            demo_data.CONFIRMED_POLICY,
            demo_data.CONFIRMED_VIN,
            today,
        )
    finally:
        engine.dispose()
    url = f"{soap_base}/iicmva/{V0809}"
    request_file = Path("olv-demo-request.xml").resolve()
    request_file.write_text(demo_data.sample_request(today))
    portal_url = f"http://{host}:{portal_port}/"
    typer.echo(
        demo_data.banner(settings.database_url, url, request_file.name, today, count)
        + portal_demo.banner(portal_url, demo_data.DEMO_NAIC)
        + card_demo.banner(portal_url, *card_files)
        + iies_demo.banner(),
        err=True,
    )
    _enforcement_in_background(settings.database_url, soap_base, demo_data.DEMO_NAIC, today)
    # The portal runs beside the SOAP service, in its own process, on the same database.
    command = [sys.executable, "-m", "olv", "portal", "serve", "--host", host]
    portal = subprocess.Popen(
        [*command, "--port", str(portal_port)],
        env={
            **os.environ,
            **portal_demo.secret_key_env(Path.cwd()),
            "OLV_DATABASE_URL": settings.database_url,
        },
    )
    try:
        serve(settings, claim, 2)
    finally:
        portal.terminate()
        try:
            portal.wait(15)
        except subprocess.TimeoutExpired:
            portal.kill()
            portal.wait()


def _enforcement_in_background(url: str, soap_base: str, naic: str, today: date) -> None:
    """The enforcement demo, once the SOAP service (started below) answers: its paper proof
    is verified live with that service."""
    import json
    import threading

    from enforcement import demo as iies_demo

    def work() -> None:
        engine = db.make_engine(url)
        try:
            # After the service is up: the seeding would otherwise slow its start (one GIL).
            iies_demo.wait_for(soap_base)
            printed = iies_demo.seed(engine, naic, today, Path.cwd())
            typer.echo(f"demo letters: {printed['letters']} in {printed['mailing']}", err=True)
            result = iies_demo.prove_live(engine, naic, today)
            typer.echo("demo paper proof for DEMO1: " + json.dumps(result), err=True)
        except Exception as exc:  # noqa: BLE001 - the demo goes on serving
            typer.echo(f"demo enforcement failed: {type(exc).__name__}", err=True)
        finally:
            engine.dispose()

    threading.Thread(target=work, name="demo-enforcement", daemon=True).start()


_register()


def main() -> None:
    configure_logging()
    sys.exit(run(sys.argv[1:]))


def run(args: list[str]) -> int:
    """Run one command; known failures become one line and an exit code (SPEC §3 conventions).

    ``OLV_DEBUG=1`` adds the traceback above the line (exit codes stay the same).
    """
    try:
        return _exit_code(app(args=args, prog_name="olv", standalone_mode=False))
    except typer.TyperException as exc:  # Click's usage errors (Typer vendors Click)
        if type(exc).__name__ == "NoArgsIsHelpError":
            return 2  # Typer has printed the help
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        return _fail(f"{exc.format_message()}{where}", exc.exit_code)
    except typer.Abort:
        return _fail("aborted", 1)
    except Exception as exc:  # the boundary where every failure becomes one line
        known = failures.from_exception(exc, _database_url())
        if known is not None:
            return _fail(str(known), known.exit_code)
        # Type and place only: the message may quote a VIN or a policy number (olv.logging).
        described = describe_exception(exc)
        innermost = described["where"].split(" < ")[0]
        return _fail(
            f"unexpected {described['error']} at {innermost} "
            "(run again with OLV_DEBUG=1 to see the traceback)",
            1,
        )


def _exit_code(result: object) -> int:
    # Without standalone mode Click returns the code of typer.Exit, or the command's return value.
    return result if isinstance(result, int) else 0


def _database_url() -> str | None:
    try:
        return get_settings().database_url
    except ValidationError:  # the settings themselves are what failed
        return None


def _fail(message: str, code: int) -> int:
    if os.environ.get("OLV_DEBUG") == "1":
        traceback.print_exc()
    for line in message.splitlines():
        typer.echo(f"error: {line}", err=True)
    return code
