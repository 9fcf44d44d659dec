"""``olv cards keygen`` and ``olv cards issue``: the issuer's side of ID cards (SPEC §7).

``olv cards verify`` is the state's side and is added to :data:`cards_app` by the portal
(it reads the state's registry of issuers).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from olv import db
from olv.config import get_settings
from olv.errors import UsageError, require_files, require_output_file

cards_app = typer.Typer(help="Insurance ID cards: keys, printing, checking.", no_args_is_help=True)


def read_pin() -> str:
    """The PIN: typed at a terminal without echo, or the first line of stdin."""
    if sys.stdin.isatty():
        import getpass

        pin = getpass.getpass("PIN: ")
    else:
        pin = sys.stdin.readline().rstrip("\r\n")
    if not pin:
        raise UsageError("no PIN on stdin (pipe it in, or type it at the prompt)")
    return pin


@cards_app.command("keygen")
def keygen(
    issuer: Annotated[str, typer.Option(help="Your DFS licence number (PC-123456) or ICC.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Private key file to create.")],
) -> None:
    """Make an Ed25519 signing key sealed under a PIN read from stdin (file mode 0600)."""
    from idcards import keys

    code = issuer.strip().upper()
    if not code or len(code) > 16:
        raise UsageError("--issuer: your DFS licence number or three-digit ICC")
    require_output_file(output)
    key, public_path = keys.generate(code, read_pin(), output)
    typer.echo(f"public key: {public_path}")
    typer.echo(f"key id: {key.key_id_text}")


@cards_app.command("issue")
def issue(
    key: Annotated[Path, typer.Option(help="Your private key file (from 'olv cards keygen').")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PDF to write.")],
    csv: Annotated[Path | None, typer.Option("--csv", help="Cards CSV (see README).")] = None,
    naic: Annotated[
        str | None, typer.Option(help="Issue from the policy store: the insurer's NAIC.")
    ] = None,
    vehicles: Annotated[
        Path | None, typer.Option(help="With --naic: CSV vin,names,year,make.")
    ] = None,
    insurer_name: Annotated[
        str | None, typer.Option(help="With --naic: the insurer's name as printed.")
    ] = None,
    fs75: Annotated[
        bool, typer.Option("--fs75", help="NYAIP FS-75: two copies, 60-day expiry.")
    ] = False,
    replacement: Annotated[
        bool, typer.Option("--replacement", help='Print "Vehicle Replacement" on every card.')
    ] = False,
    template: Annotated[str, typer.Option(help="Card template: NY or IICMVA.")] = "NY",
) -> None:
    """Sign and print cards (PIN on stdin); every card is logged in the database."""
    from idcards import issue as issuing
    from idcards import keys
    from idcards.card import TEMPLATES

    if (csv is None) == (naic is None):
        raise UsageError("give exactly one of --csv and --naic")
    if naic is not None and (vehicles is None or not insurer_name):
        raise UsageError("--naic needs --vehicles and --insurer-name")
    if template not in TEMPLATES:
        raise UsageError(f"--template: one of {', '.join(TEMPLATES)}")
    require_files([p for p in (key, csv, vehicles) if p is not None])
    require_output_file(output)
    engine = db.open_database(get_settings().database_url)
    try:
        signing = keys.load_signing(key, read_pin())
        options = issuing.Options(template=template, fs75=fs75, replacement=replacement)
        if csv is not None:
            cards = issuing.cards_from_csv(csv, signing.issuer, options)
        else:
            assert naic is not None and vehicles is not None and insurer_name is not None
            cards = issuing.cards_from_store(
                engine, naic, insurer_name, vehicles, signing.issuer, options
            )
        pages = issuing.issue(engine, cards, signing, output)
    finally:
        engine.dispose()
    typer.echo(f"{len(cards)} cards issued to {output} ({pages} pages)")
