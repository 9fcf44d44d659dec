"""The case side of ``olv iies``: ``run``, ``case``, ``proof``, ``letters``, ``undeliverable``.

JSON on stdout, one object a line; exit 0 success, 1 rejected or not found, 2 usage (SPEC §6).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import Engine

from olv import db
from olv.config import get_settings
from olv.errors import OlvError, UsageError


class NotFound(OlvError):
    """Nothing on file for what was asked (exit 1)."""


def _engine() -> Engine:
    return db.open_database(get_settings().database_url)


def _day(text: str | None, option: str = "--date") -> date:
    if text is None:
        return datetime.now(get_settings().zone).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a date (YYYY-MM-DD)") from None


def _print(obj: dict[str, Any]) -> None:
    typer.echo(json.dumps(obj, sort_keys=False))


DateOption = Annotated[str | None, typer.Option("--date", help="YYYY-MM-DD (default: today)")]


def register(app: typer.Typer) -> None:
    """Add the case commands to the ``olv iies`` application."""

    @app.command("run")
    def run_cmd(when: DateOption = None) -> None:
        """The daily run: post matched transactions, move cases, decide letters (idempotent)."""
        from enforcement.case_settings import get_case_settings
        from enforcement.run import run

        day = _day(when)
        engine = _engine()
        try:
            _print(run(engine, day, get_case_settings()))
        finally:
            engine.dispose()

    @app.command("case")
    def case_cmd(
        vin: Annotated[str | None, typer.Argument(help="VIN of the registration")] = None,
        doc: Annotated[str | None, typer.Option("--doc", help="a letter's Document ID")] = None,
        plate: Annotated[
            str | None, typer.Option("--plate", help="narrow a VIN to a plate")
        ] = None,
    ) -> None:
        """A record's case state and activities: by VIN (and plate) or by Document ID."""
        from enforcement.inquiry import lookup
        from enforcement.letters import is_doc_id

        if (vin is None) == (doc is None):
            raise UsageError("give a VIN or --doc ID (one of them)")
        if doc is not None and not is_doc_id(doc):
            raise UsageError("--doc: a Document ID is the 10 digits printed on the letter")
        engine = _engine()
        try:
            with db.transaction(engine) as session:
                found = lookup(session, vin=vin, plate=plate, doc_id=doc)
        finally:
            engine.dispose()
        if found is None:
            raise NotFound("no enforcement record for this " + ("VIN" if doc is None else "ID"))
        _print(found)

    @app.command("proof")
    def proof_cmd(
        plate: Annotated[str, typer.Option("--plate", help="registration plate")],
        state: Annotated[str, typer.Option("--state", help="the plate's state")],
        naic: Annotated[str, typer.Option("--naic", help="the insurer on the card")],
        policy: Annotated[str, typer.Option("--policy", help="the policy number on the card")],
        when: DateOption = None,
    ) -> None:
        """Post paper proof: verified live with the insurer's OLV service, else an MVF."""
        from enforcement import proof
        from enforcement.case_settings import get_case_settings

        engine = _engine()
        try:
            raw = proof.ProofInput(plate, state, naic, policy, _day(when))
            wait = proof.COMMAND_WAIT_SECONDS  # no proxy's timeout to answer within
            _print(proof.post(engine, raw, get_case_settings(), who="dmv:cli", wait_seconds=wait))
        finally:
            engine.dispose()

    @app.command("letters")
    def letters_cmd(
        when: Annotated[str, typer.Option("--date", help="mailing date YYYY-MM-DD")],
        out: Annotated[Path, typer.Option("-o", "--out", help="directory for PDFs and CSV")],
    ) -> None:
        """Print the day's letters as PDF files and mailing.csv for the print vendor."""
        from enforcement.mailing import write_day

        day = _day(when)
        if out.exists() and not out.is_dir():
            raise UsageError(f"-o: {out} exists and is not a directory")
        engine = _engine()
        try:
            _print(write_day(engine, day, out))
        finally:
            engine.dispose()

    @app.command("mvf")
    def mvf_cmd(
        naic: Annotated[str, typer.Option("--naic", help="the insurer asked")],
    ) -> None:
        """One JSON line per mandatory verification waiting for the insurer's NBS/NIS answer."""
        from enforcement.mvf_outbox import pending
        from olv import normalize

        if not normalize.is_naic(naic):
            raise UsageError("--naic: five digits")
        engine = _engine()
        try:
            for row in pending(engine, naic):
                _print(row)
        finally:
            engine.dispose()

    @app.command("undeliverable")
    def undeliverable_cmd(
        doc_id: Annotated[str, typer.Argument(help="Document ID of the returned letter")],
        when: DateOption = None,
    ) -> None:
        """Record a letter returned as undeliverable (activity UND)."""
        from enforcement.letters import is_doc_id
        from enforcement.mailing import undeliverable

        if not is_doc_id(doc_id):
            raise UsageError("DOC_ID: the 10 digits printed on the letter")
        engine = _engine()
        try:
            _print(undeliverable(engine, doc_id, _day(when), who="dmv:cli"))
        finally:
            engine.dispose()
