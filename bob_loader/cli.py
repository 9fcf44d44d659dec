"""``olv bob …`` commands (SPEC §3). Each command is a thin shell over a module of its own.

``olv bob export`` is the insurer's command and reads the insurer store: the composition root
(``olv.cli``) adds ``service.cli.bob_export`` to :data:`bob_app`, so this package never imports
``service``. A command fails by raising an ``OlvError``; ``olv.cli`` prints its one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from olv import db, errors
from olv.config import get_settings
from olv.errors import OlvError

bob_app = typer.Typer(
    help="Book of business: load, watch, export, push, look up.", no_args_is_help=True
)
contacts_app = typer.Typer(
    help="Insurer contacts that receive error reports.", no_args_is_help=True
)
bob_app.add_typer(contacts_app, name="contacts")


def _engine():  # -> sqlalchemy.Engine
    return db.open_database(get_settings().database_url)


@bob_app.command("load")
def load(
    files: Annotated[list[Path], typer.Argument(help="BoB files (fixed-width, 300 columns)")],
    report_dir: Annotated[
        Path | None,
        typer.Option(help="Where <file>.errors.txt goes (default: beside the file)"),
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="minimal or full (default OLV_BOB_PROFILE, minimal)")
    ] = None,
) -> None:
    """Validate and load BoB files; exit 0 when all are accepted (or already loaded), 1 if not."""
    from bob_loader.intake_claims import safe_name
    from bob_loader.load import load_files
    from olv.bob.validate import PROFILES

    if profile is not None and profile not in PROFILES:
        raise typer.BadParameter(f"must be one of {', '.join(PROFILES)}", param_hint="--profile")
    errors.require_files(files)
    engine = _engine()
    try:
        # The operator names these files: a link is followed (an upload's never is).
        outcomes = load_files(
            engine, files, report_dir=report_dir, profile=profile, progress=True, follow_links=True
        )
    finally:
        engine.dispose()
    for o in outcomes:
        parts = [f"{safe_name(o.path.name)}: {o.status}"]
        if o.status != "duplicate":
            parts.append(f"{o.records} records loaded, {o.errors} errors, {o.warnings} warnings")
        if o.naics:
            parts.append("NAIC " + " ".join(o.naics))
        if o.reason:
            parts.append(o.reason)
        if o.report_path:
            parts.append(f"report {o.report_path}")
        typer.echo("; ".join(parts))
    if any(o.status == "rejected" for o in outcomes):
        raise typer.Exit(1)


@bob_app.command("lookup")
def lookup(
    vins: Annotated[list[str], typer.Argument(help="VINs, or - to read them from stdin")],
) -> None:
    """Current BoB records for the VINs as JSON lines (hits only); exit 1 when none is found."""
    from bob_loader.lookup import find_by_vins

    source = _stdin_vins() if vins == ["-"] else iter(vins)
    engine = _engine()
    found = 0
    try:
        with engine.connect() as conn:
            out = sys.stdout
            for hit in find_by_vins(conn, source):
                out.write(json.dumps(hit) + "\n")
                found += 1
    finally:
        engine.dispose()
    if not found:
        raise typer.Exit(1)


# A VIN is at most 25 characters; a longer line is not one (and is never held whole).
MAX_VIN_LINE = 256


def _stdin_vins() -> Iterator[str]:
    from olv.bob.lines import capped_lines

    for number, raw, overlong in capped_lines(sys.stdin.buffer, MAX_VIN_LINE):
        if overlong:
            typer.echo(f"warning: line {number}: not a VIN (too long), skipped", err=True)
            continue
        yield raw.decode("latin-1")


@bob_app.command("stats")
def stats() -> None:
    """One JSON line per NAIC with a master: naic, records, file, loaded_at."""
    from bob_loader.lookup import naic_stats

    engine = _engine()
    try:
        with engine.connect() as conn:
            for row in naic_stats(conn):
                typer.echo(json.dumps(row))
    finally:
        engine.dispose()


@contacts_app.command("add")
def contacts_add(
    naic: Annotated[str, typer.Option("--naic")],
    email: Annotated[str, typer.Option("--email")],
    name: Annotated[str | None, typer.Option("--name")] = None,
) -> None:
    """Add a contact for a NAIC (adding a known address again updates its name)."""
    from bob_loader.contacts import add_contact

    engine = _engine()
    try:
        with engine.begin() as conn:
            add_contact(conn, naic, email, name)
    finally:
        engine.dispose()
    typer.echo(f"contact {email} added for NAIC {naic}")


@contacts_app.command("list")
def contacts_list(naic: Annotated[str | None, typer.Option("--naic")] = None) -> None:
    """Contacts as JSON lines: naic, name, email."""
    from bob_loader.contacts import list_contacts

    engine = _engine()
    try:
        with engine.connect() as conn:
            for row in list_contacts(conn, naic):
                typer.echo(json.dumps(row))
    finally:
        engine.dispose()


@contacts_app.command("remove")
def contacts_remove(
    naic: Annotated[str, typer.Option("--naic")],
    email: Annotated[str, typer.Option("--email")],
) -> None:
    """Remove a NAIC's contact: it receives no more error reports or notices."""
    from bob_loader.contacts import remove_contact

    engine = _engine()
    try:
        with engine.begin() as conn:
            remove_contact(conn, naic, email)
    finally:
        engine.dispose()
    typer.echo(f"contact {email} removed for NAIC {naic}")


# =============================================================================================
# SFTP intake: ``watch``, ``push``, ``fetch`` (bob_loader.intake, bob_loader.sftp).
# Kept as one block at the end of the file: the commands above belong to the loader.
# =============================================================================================

SftpSpec = Annotated[str, typer.Option("--sftp", help="USER@HOST:PATH on the SFTP server")]
PortOpt = Annotated[int, typer.Option("--port", help="SSH port")]
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", help="Private key file (default: the ~/.ssh keys and the agent)"),
]
KnownHostsOpt = Annotated[
    Path | None,
    typer.Option("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)"),
]
InsecureOpt = Annotated[
    bool,
    typer.Option(
        "--insecure-accept-any-host-key",
        help="LAB USE ONLY: do not check the server's host key (open to impostor servers).",
    ),
]


@bob_app.command("watch")
def watch(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Intake root: DIR/<account>/inbox/ per insurer", exists=True, file_okay=False
        ),
    ],
    once: Annotated[
        bool, typer.Option("--once", help="Process what is complete now, then exit (cron)")
    ] = False,
) -> None:
    """State: SFTP intake — load completed uploads, archive them, report back to the insurer."""
    import logging
    import signal
    import threading

    from bob_loader import intake, intake_watch
    from bob_loader.intake_claims import StabilityTracker
    from bob_loader.intake_notify import db_contacts
    from bob_loader.intake_settings import IntakeSettings
    from bob_loader.load import load_files
    from bob_loader.mail import sender_from_settings
    from enforcement.intake import IiesIntake  # insurers' IIES files share the inboxes

    log = logging.getLogger("bob_loader.intake")
    settings = IntakeSettings()
    sender = sender_from_settings(settings)
    if sender is None:
        log.info("OLV_SMTP_HOST is not set: summaries are not e-mailed")
    engine = _engine()
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        # Only a flag: the file in hand is finished, then the loop returns and we exit 0.
        log.info("stopping after the current file", extra={"signal": signum})
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    watcher = intake.Intake(
        base=directory,
        engine=engine,
        loader=load_files,
        stability=StabilityTracker(
            settings.intake_stable_seconds, partial_seconds=settings.intake_partial_seconds
        ),
        contacts=db_contacts(engine),
        sender=sender,
        sender_address=settings.smtp_from,
        account_emails=settings.intake_account_emails,
        account_naics=settings.intake_account_naics or None,
        handlers=[IiesIntake()],
    )
    log.info("watching", extra={"directory": str(directory), "once": once})
    try:
        ok = intake_watch.watch(
            watcher, poll_seconds=settings.intake_poll_seconds, stop=stop, once=once
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        engine.dispose()
    if once and not ok:
        raise typer.Exit(1)  # cron should notice; the failed claims are retried next run


def _ssh_options(  # -> bob_loader.sftp.SshOptions (imported lazily, like every command here)
    port: int, key: Path | None, known_hosts: Path | None, insecure: bool
):
    from bob_loader.sftp import SshOptions

    if insecure:
        typer.echo("warning: host key NOT checked (--insecure-accept-any-host-key)", err=True)
    return SshOptions(
        port=port, key=key, known_hosts=known_hosts, insecure_accept_any_host_key=insecure
    )


def _sftp_target(spec: str):  # -> bob_loader.sftp.SftpTarget
    from bob_loader.sftp import SftpTarget

    try:
        return SftpTarget.parse(spec)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--sftp") from None


@bob_app.command("push")
def push(
    file: Annotated[
        Path, typer.Argument(help="The BoB file to upload", exists=True, dir_okay=False)
    ],
    sftp: SftpSpec,
    port: PortOpt = 22,
    key: KeyOpt = None,
    known_hosts: KnownHostsOpt = None,
    insecure_accept_any_host_key: InsecureOpt = False,
) -> None:
    """Insurer: upload a BoB file by SFTP (key authentication; appears only when complete)."""
    from bob_loader import sftp as sftp_client

    target = _sftp_target(sftp)
    options = _ssh_options(port, key, known_hosts, insecure_accept_any_host_key)
    try:
        remote = sftp_client.push(file, target, options)
    except sftp_client.SftpFailure as exc:
        raise OlvError(f"push to {target.host} failed: {exc}") from None
    typer.echo(f"{file.name}: uploaded to {target.user}@{target.host}:{remote}")


@bob_app.command("fetch")
def fetch(
    sftp: SftpSpec,
    to: Annotated[
        Path,
        typer.Option("--to", help="Local directory, e.g. an account's inbox/", file_okay=False),
    ],
    port: PortOpt = 22,
    key: KeyOpt = None,
    known_hosts: KnownHostsOpt = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove remote files once safely downloaded")
    ] = False,
    settle: Annotated[
        float | None,
        typer.Option(
            "--settle",
            help="Seconds a remote file must stay unchanged (default OLV_INTAKE_STABLE_SECONDS)",
        ),
    ] = None,
    insecure_accept_any_host_key: InsecureOpt = False,
) -> None:
    """State: collect completed BoB files from a remote SFTP directory (each file once)."""
    from bob_loader import sftp as sftp_client
    from bob_loader.intake_settings import IntakeSettings

    target = _sftp_target(sftp)
    options = _ssh_options(port, key, known_hosts, insecure_accept_any_host_key)
    wait = IntakeSettings().intake_stable_seconds if settle is None else settle
    try:
        result = sftp_client.fetch(target, to, options, delete=delete, settle_seconds=wait)
    except sftp_client.FetchBusy as exc:
        # Overlapping cron runs: the running one does the work; not an error.
        typer.echo(f"skipped: {exc}", err=True)
        return
    except sftp_client.SftpFailure as exc:
        raise OlvError(f"fetch from {target.host} failed: {exc}") from None
    for name in result.fetched:
        typer.echo(f"fetched {name}")
    for name in result.deleted:
        typer.echo(f"deleted remote {name}")
    typer.echo(f"{len(result.fetched)} fetched, {result.skipped} skipped", err=True)
