"""Enforcement transactions through a real SFTP server (SPEC §6, the SFTP channel): an insurer's
SFTP client uploads ``IIES <NAIC> <YYYYMMDD>.csv`` into its inbox, the intake loads it, and the
same client reads the acknowledgement and the per-transaction returns back from its outbox;
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from bob_loader.intake import Intake
from bob_loader.intake_claims import StabilityTracker
from bob_loader.load import load_files
from enforcement.intake import IiesIntake
from enforcement.models import IiesTransaction
from olv import db
from tests.helpers.iies import NAIC, VIN_A, csv_text, row
from tests.helpers.iies_cases import add_registrant
from tests.helpers.sftp_server import SftpServer, intake_account_server

FILE = f"IIES {NAIC} 20261203.csv"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    with intake_account_server(tmp_path_factory.mktemp("iies-sftp")) as running:
        yield running


@pytest.fixture(autouse=True)
def _empty_account(server: SftpServer) -> None:
    for sub in ("inbox", "outbox"):
        for path in (server.root / sub).iterdir():
            path.unlink()


def _connect(server: SftpServer) -> asyncssh.SSHClientConnection:
    # asyncssh.connect returns an awaitable connection context; the caller awaits it.
    return asyncssh.connect(  # type: ignore[return-value]
        server.host,
        port=server.port,
        username=server.user,
        client_keys=[str(server.keys.client_key)],
        known_hosts=str(server.keys.known_hosts),
        agent_path=None,
    )


async def _upload(server: SftpServer, local: Path) -> None:
    async with _connect(server) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(local), server.remote(f"inbox/{local.name}"))


async def _outbox(server: SftpServer) -> dict[str, bytes]:
    """Every file in the insurer's outbox, read over SFTP."""
    found: dict[str, bytes] = {}
    async with _connect(server) as conn, conn.start_sftp_client() as sftp:
        for name in await sftp.listdir(server.remote("outbox")):
            if name in (".", ".."):
                continue
            async with sftp.open(server.remote(f"outbox/{name}"), "rb") as handle:
                found[name] = await handle.read()
    return found


def _intake(server: SftpServer, engine: Engine) -> Intake:
    return Intake(
        base=server.root.parent,
        engine=engine,
        loader=load_files,
        stability=StabilityTracker(0.0),
        contacts=lambda naics: [],
        account_naics={"acme": [NAIC]},
        handlers=[IiesIntake()],
    )


def test_a_transaction_file_uploaded_by_sftp_is_answered_in_the_outbox(
    server: SftpServer, db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    try:
        add_registrant(engine, "ABC123", VIN_A)
        local = tmp_path / FILE
        local.write_text(
            csv_text(
                [
                    row(txn_id="S1", plate="ABC123"),  # H1: VIN and plate
                    row(txn_id="S2", vin="UNKNOWN"),  # E43
                    row(txn_id="S3", vin="1FTFW1ET9DFC10312", last_name="NOBODY"),  # U
                ]
            )
        )
        asyncio.run(_upload(server, local))
        assert (server.root / "inbox" / FILE).read_bytes() == local.read_bytes()

        assert _intake(server, engine).run_round() == 1

        outbox = asyncio.run(_outbox(server))
        [ack_name] = [n for n in outbox if n.endswith(".ack.json")]
        ack = json.loads(outbox[ack_name])
        assert (ack["file"], ack["naic"], ack["channel"], ack["status"]) == (
            FILE,
            NAIC,
            "sftp",
            "accepted",
        )
        assert ack["counts"] == {"H": 1, "R": 0, "E": 1, "U": 1}
        [returns_name] = [n for n in outbox if n.startswith("IIES-RETURNS")]
        returns = list(csv.DictReader(io.StringIO(outbox[returns_name].decode())))
        answered = {r["txn_id"]: (r["disposition"], r["codes"]) for r in returns}
        assert answered == {"S1": ("H", "H1"), "S2": ("E", "E43"), "S3": ("U", "")}
        assert list(server.root.joinpath("inbox").iterdir()) == []  # taken in, not left behind
        with db.transaction(engine) as session:
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 3
    finally:
        engine.dispose()


def test_a_hostile_upload_is_refused_whole_and_said_so_in_the_outbox(
    server: SftpServer, db_url: str, tmp_path: Path
) -> None:
    engine = db.make_engine(db_url)
    try:
        local = tmp_path / FILE
        local.write_bytes(b"txn_id,type\n" + b"\x00\xff" * 2000)
        asyncio.run(_upload(server, local))
        assert _intake(server, engine).run_round() == 1
        outbox = asyncio.run(_outbox(server))
        [ack_name] = [n for n in outbox if n.endswith(".ack.json")]
        ack = json.loads(outbox[ack_name])
        assert (ack["status"], ack["error_code"]) == ("rejected", "F01")
        with db.transaction(engine) as session:
            assert session.scalar(select(func.count()).select_from(IiesTransaction)) == 0
    finally:
        engine.dispose()
