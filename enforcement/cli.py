"""``olv iies``: insurance enforcement (SPEC §6)."""

from __future__ import annotations

import typer

from enforcement import case_cli

iies_app = typer.Typer(help="Insurance enforcement (IIES model).", no_args_is_help=True)
case_cli.register(iies_app)
