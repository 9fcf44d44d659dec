"""``olv bob …`` commands."""

from __future__ import annotations

import typer

bob_app = typer.Typer(help="Book of business: load, watch, export, push, look up.", no_args_is_help=True)
