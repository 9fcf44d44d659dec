"""``olv portal``, ``olv insurers``, ``olv registrations``, ``olv users`` and ``olv tokens``.

A command fails by raising an ``OlvError`` (the domain errors of ``portal`` are ones): the
``olv`` command prints its one ``error:`` line and exits with its code (2 for usage and
configuration errors, 1 for an operation that failed).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from olv import db
from olv.config import get_settings
from olv.errors import UsageError

portal_app = typer.Typer(help="State query portal (web pages and JSON API).", no_args_is_help=True)
insurers_app = typer.Typer(help="Registry of insurer services.", no_args_is_help=True)
registrations_app = typer.Typer(help="Vehicle registrations (plate → VIN).", no_args_is_help=True)
users_app = typer.Typer(help="Portal users.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)


def _engine() -> Engine:
    """The configured database, refused in one line when unusable (no schema, unreachable)."""
    return db.open_database(get_settings().database_url)


@contextlib.contextmanager
def _transaction() -> Iterator[Session]:
    """One transaction on the configured database; an error rolls it back (and, raised on,
    ends the command with its message and exit code)."""
    engine = _engine()
    try:
        with db.transaction(engine) as session:
            yield session
    finally:
        engine.dispose()


@portal_app.command("serve")
def portal_serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the portal's pages and JSON API (OpenAPI at /docs)."""
    from olv import errors, read_replica
    from olv.ports import claim_port
    from portal import secret_key
    from portal.settings import PortalSettings

    settings = get_settings()
    portal_settings = PortalSettings()  # a bad OLV_PORTAL_* value is refused here, in one line
    secret_key.load(portal_settings)  # so is a missing or short secret key
    workers = portal_settings.workers
    # Everything that can be refused is checked before the banner claims the portal is up.
    with claim_port(host, port):
        try:
            # Bounded: a server that drops packets must not hold the start for minutes.
            wait = portal_settings.budget_seconds
            db.open_database(settings.database_url, wait_seconds=wait).dispose()
        except errors.DatabaseUnreachable as exc:
            if db.is_sqlite(settings.database_url):
                raise
            typer.echo(f"warning: {exc}; serving anyway", err=True)
        read_replica.check_read_url(settings)
        typer.echo(f"OLV state portal on http://{host}:{port}/ (API docs: /docs)", err=True)
        _serve(host, port, workers)


def _serve(host: str, port: int, workers: int) -> None:
    """uvicorn with the app factory; SIGTERM/SIGINT stop it gracefully and it exits 0.
    Several workers run under :class:`olv.serving.Supervisor` (a socket each, so that
    keep-alive connections spread evenly; SIGHUP rolls them)."""
    import uvicorn

    from olv import metrics
    from olv.serving import COMMON_OPTIONS, QuietServer, Supervisor, end_process, http_protocol
    from portal.settings import KEEP_ALIVE_SECONDS, LISTEN_BACKLOG, PortalSettings

    limits = PortalSettings()
    options: dict[str, Any] = dict(
        COMMON_OPTIONS,
        host=host,
        port=port,
        timeout_graceful_shutdown=10,
        # Half-sent requests are dropped (slowloris), idle connections closed, and past the
        # connection cap new requests get 503 at once instead of piling up.
        # What a connection writes in one turn leaves in one write (olv.response_write).
        http=http_protocol(limits.header_timeout_seconds, limits.body_idle_seconds),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=limits.max_connections,
        backlog=LISTEN_BACKLOG,
    )

    def config() -> uvicorn.Config:
        return uvicorn.Config("portal.app:factory", **options)

    with metrics.multiprocess_dir():  # before the first value is made, in any worker
        if workers > 1:
            code = Supervisor(host, port, workers, config).run()
        else:
            QuietServer(config()).run()
            code = 0
    end_process(code)


@portal_app.command("purge")
def portal_purge(
    older_than: Annotated[
        int | None,
        typer.Option(
            "--older-than",
            help="Age in days, at least 366 (default: OLV_PORTAL_QUERY_LOG_DAYS).",
            min=366,
        ),
    ] = None,
) -> None:
    """Delete query-log, security-log and insurer-call rows older than DAYS days (run daily)."""
    from portal.querylog import purge
    from portal.settings import PortalSettings

    days = older_than if older_than is not None else PortalSettings().query_log_days
    engine = _engine()
    try:
        removed = purge(engine, days)
    finally:
        engine.dispose()
    typer.echo(f"{removed} log rows older than {days} days removed")


# --- insurers ------------------------------------------------------------------------------


@insurers_app.command("add")
def insurers_add(
    naic: Annotated[str, typer.Option(help="The insurer's five-digit NAIC.")],
    name: Annotated[str, typer.Option(help="The insurer's name.")],
    url: Annotated[str, typer.Option(help="Its SOAP endpoint, e.g. https://…/iicmva/00200809.")],
    version: Annotated[str, typer.Option(help="00200809 or 00200510.")],
    accepts_unknown: Annotated[
        bool, typer.Option("--accepts-unknown", help="It answers policy key UNKNOWN.")
    ] = False,
    client_cert: Annotated[
        Path | None, typer.Option(help="PEM client certificate (mutual TLS).")
    ] = None,
    client_key: Annotated[Path | None, typer.Option(help="PEM key of the certificate.")] = None,
    ca_bundle: Annotated[Path | None, typer.Option(help="PEM CAs to trust.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait at most (default: the whole budget).")
    ] = None,
) -> None:
    """Register an insurer's service; adding an existing NAIC updates it."""
    from portal.registry import InsurerInput, upsert

    data = InsurerInput(
        naic=naic,
        name=name,
        url=url,
        version=version,
        accepts_unknown=accepts_unknown,
        client_cert=str(client_cert) if client_cert else None,
        client_key=str(client_key) if client_key else None,
        ca_bundle=str(ca_bundle) if ca_bundle else None,
        timeout_seconds=timeout,
    )
    with _transaction() as session:
        _, created = upsert(session, data, source="cli")
    typer.echo(f"insurer {naic} {'added' if created else 'updated'}")


@insurers_app.command("list")
def insurers_list() -> None:
    """The registered insurers as JSON lines."""
    from portal.registry import all_insurers, as_dict

    engine = _engine()
    try:
        with db.session_factory(engine)() as session:
            for row in all_insurers(session):
                typer.echo(json.dumps(as_dict(row)))
    finally:
        engine.dispose()


@insurers_app.command("check")
def insurers_check(
    naic: Annotated[str, typer.Argument(help="NAIC of a registered insurer.")],
    vin: Annotated[str | None, typer.Option(help="A VIN the insurer covers today.")] = None,
    policy: Annotated[str | None, typer.Option(help="The policy number covering that VIN.")] = None,
) -> None:
    """Onboarding test of an insurer's service: one line per scenario; exit 0 only if all pass."""
    import asyncio

    from portal.onboarding import run_checks

    if bool(vin) != bool(policy):
        raise UsageError("--vin and --policy go together")
    results = asyncio.run(run_checks(get_settings(), naic, vin=vin, policy=policy))
    for outcome in results:
        typer.echo(outcome.line())
    failed = [r for r in results if not r.passed]
    typer.echo(f"{len(results) - len(failed)} of {len(results)} scenarios passed")
    if failed:
        raise typer.Exit(1)


# --- registrations -------------------------------------------------------------------------


@registrations_app.command("import")
def registrations_import(
    file: Annotated[
        Path,
        typer.Argument(help="CSV: plate,state,vin, then any registrant columns (SPEC §6)."),
    ],
) -> None:
    """Import registrations, with their registrants when the file has them (upserts by plate
    and state; columns a file lacks are left as they were)."""
    from enforcement.registrations import import_file

    if not file.is_file():
        raise UsageError(f"{file}: no such file")
    engine = _engine()
    try:
        result = import_file(engine, file)
    finally:
        engine.dispose()
    for problem in result.errors:
        typer.echo(f"{file}: {problem}", err=True)
    if result.skipped > len(result.errors):
        typer.echo(f"{file}: {result.skipped - len(result.errors)} more rows skipped", err=True)
    typer.echo(f"{file}: {result.rows} registrations imported, {result.skipped} rows skipped")
    if result.skipped and not result.rows:
        raise typer.Exit(1)


# --- users ---------------------------------------------------------------------------------


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="officer, court, dmv, insurer or admin.")],
    naic: Annotated[str | None, typer.Option(help="The NAIC of an insurer liaison.")] = None,
) -> None:
    """Add a user; the password is read from stdin (its first line)."""
    from portal.users import UserError, add, check_role

    try:
        check_role(role, naic)
    except UserError as exc:  # refused before any password is asked: a bad argument
        raise UsageError(str(exc)) from None
    if sys.stdin.isatty():  # typed by a person: do not echo it
        import getpass

        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password on stdin (pipe it in, e.g. from a password manager)")
    with _transaction() as session:
        add(session, username, role, password, naic=naic, actor="cli", source="cli")
    typer.echo(f"user {username} added ({role}); the second factor is enrolled at first login")


@users_app.command("unlock")
def users_unlock(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Lift a lockout and reset the failed-login count."""
    from portal import users

    _change_user(username, users.unlock, "unlocked")


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Disable an account: its sessions end and its API tokens stop working."""
    from portal import users

    _change_user(username, users.disable, "disabled")


@users_app.command("enable")
def users_enable(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Enable a disabled account again."""
    from portal import users

    _change_user(username, users.enable, "enabled")


@users_app.command("reset-totp")
def users_reset_totp(username: Annotated[str, typer.Argument(help="Login name.")]) -> None:
    """Forget the second factor; the person enrols a new one at the next sign-in."""
    from portal import users

    _change_user(username, users.reset_second_factor, "must enrol a new second factor")


def _change_user(username: str, operation: Callable[..., None], done: str) -> None:
    """One of :mod:`portal.users`' account operations, as the admin pages run it."""
    from portal import users

    with _transaction() as session:
        operation(session, users.find(session, username), actor="cli", source="cli")
    typer.echo(f"user {username} {done}")


# --- tokens --------------------------------------------------------------------------------


@tokens_app.command("create")
def tokens_create(
    username: Annotated[str, typer.Argument(help="The user the token acts for.")],
    expires_days: Annotated[
        int | None,
        typer.Option(help="Lifetime (default OLV_PORTAL_TOKEN_DAYS).", min=1, max=3650),
    ] = None,
) -> None:
    """Create an API token; it is printed once, alone on the last line (stored as a hash)."""
    from portal.settings import PortalSettings
    from portal.tokens import create

    days = expires_days or PortalSettings().token_days
    with _transaction() as session:
        row, token = create(session, username, days, source="cli")
        token_id, expires = row.id, row.expires_at
    typer.echo(f"token {token_id} for {username}, expires {expires:%Y-%m-%d %H:%M} UTC")
    typer.echo("shown once; store it now:")
    typer.echo(token)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's id.")]) -> None:
    """Revoke an API token at once."""
    from portal.tokens import revoke

    with _transaction() as session:
        revoke(session, token_id, source="cli")
    typer.echo(f"token {token_id} revoked")
