"""The backup and restore of deploy/README.md, run as documented, bring back every row.

A private PostgreSQL runs with the README's archive settings and is filled through ``olv``
commands as operators and clients would (the schema, an insurer's policies, a BoB file,
insurers, registrations, users, tokens, and audit rows from real SOAP queries). The README's
nightly backup block runs as it stands (only the backup folder swapped for the test's own);
more rows are written after it, so that only the WAL archive can bring them back. Every
table's row count and a checksum of its contents are taken, the server is killed and its data
directory deleted; the README's restore block makes a fresh data directory, a fresh server
replays the archive, and the tables must match, row for row.

The test forces a WAL switch after the last write (``pg_switch_wal``) instead of waiting the
documented ``archive_timeout``: it stands in for the minute the documentation allows.
"""

from __future__ import annotations

import errno
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import data, loopback
from tests.helpers.olv_cli import olv as _olv
from tests.helpers.portal import write_bob
from tests.helpers.private_pg import PrivatePostgres, private_postgres, server_user
from tests.helpers.soap import envelope, request_xml, soap_server

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / "deploy" / "README.md"
SHIPPED_BACKUP = "/var/backups/olv"
PASSWORD = "Restore-Drill-Password-7"


def _block(name: str) -> str:
    """The fenced block after ``<!-- tested: name -->`` in the runbook."""
    found = re.search(
        rf"<!-- tested: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", RUNBOOK.read_text(), re.S
    )
    assert found, f"deploy/README.md has no tested block {name!r}"
    return found.group(1)


def _settings(backup: Path) -> dict[str, str]:
    settings = {}
    for line in _block("backup-settings").splitlines():
        if line.strip():
            key, value = (part.strip() for part in line.split("=", 1))
            settings[key] = value.strip("'").replace(SHIPPED_BACKUP, str(backup))
    assert SHIPPED_BACKUP in _block("backup-settings")
    return settings


def _run_block(name: str, env: dict[str, str], user: str | None) -> None:
    script = _block(name)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        user=user,
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"


def _shell_env(server: PrivatePostgres, backup: Path, **extra: str) -> dict[str, str]:
    assert server.bin_dir is not None
    return {
        "PATH": f"{server.bin_dir}:/usr/bin:/bin",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": "postgres",
        "OLV_BACKUP": str(backup),
        **extra,
    }


def _verify_a_few(url: str, folder: Path, count: int) -> None:
    """``count`` SOAP queries through a real server: audit rows, written as it stops."""
    with soap_server({"OLV_DATABASE_URL": url}, folder) as server:
        for _ in range(count):
            response = loopback.post(
                server.url("/iicmva/00200809"),
                content=envelope(request_xml("00200809")),
                headers={"Content-Type": "text/xml; charset=utf-8"},
                timeout=10,
            )
            assert response.status_code == 200, response.text


def _contents(url: str) -> dict[str, tuple[int, str]]:
    """Per table of the public schema: its row count and an order-free checksum of its rows."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
            )
        ]
        found = {}
        for table in tables:
            row = conn.execute(
                f"SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' "
                f"ORDER BY md5(t::text))), '') FROM \"{table}\" t"
            ).fetchone()
            assert row is not None
            found[table] = (int(row[0]), str(row[1]))
    return found


def _wait_archived(url: str) -> None:
    """Switch to a new WAL segment and wait until the one holding the last writes is archived."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        last = row[0]
        deadline = time.monotonic() + 60
        while True:
            done = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
            if done is not None and done[0] is not None and done[0] >= last:
                return
            assert time.monotonic() < deadline, f"WAL {last} was not archived"
            time.sleep(0.2)


def _wait_out_of_recovery(url: str) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + 120
    while True:
        try:
            with psycopg.connect(conninfo, connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                if row is not None and row[0] is False:
                    return
        except psycopg.OperationalError:
            pass
        assert time.monotonic() < deadline, "the restored server did not finish recovery"
        time.sleep(0.2)


@pytest.fixture
def backup_folder() -> Iterator[Path]:
    """A folder the server's account can write (pytest's own is private to this user)."""
    user = server_user()
    folder = Path(tempfile.mkdtemp(prefix="olv-backup-"))
    for part in ("base", "wal"):
        (folder / part).mkdir()
    if user is not None:
        for path in (folder, folder / "base", folder / "wal"):
            shutil.chown(path, user)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_documented_restore_brings_back_every_row(backup_folder: Path, tmp_path: Path) -> None:
    with private_postgres(settings=_settings(backup_folder)) as primary:
        url = primary.url
        # Before the backup: what a state and an insurer build up.
        _olv(url, "db", "upgrade")
        policies = tmp_path / "policies.csv"
        policies.write_text(data.policy_csv())
        _olv(url, "policies", "import", str(policies))
        bob = write_bob(
            tmp_path / "State 20261101.txt",
            [(data.NAIC, "P-OK", data.VIN_OK), (data.NAIC, "P-CANCEL", data.VIN_CANCELLED)],
        )
        _olv(url, "bob", "load", str(bob), "--report-dir", str(tmp_path))
        _olv(
            url,
            "insurers",
            "add",
            "--naic",
            data.NAIC,
            "--name",
            "Insurer One",
            "--url",
            "http://127.0.0.1:9/iicmva/00200809",
            "--version",
            "00200809",
        )
        plates = tmp_path / "registrations.csv"
        plates.write_text(f"plate,state,vin\nOLV 1,ID,{data.VIN_OK}\n")
        _olv(url, "registrations", "import", str(plates))
        _olv(url, "users", "add", "officer1", "--role", "officer", stdin=PASSWORD + "\n")
        _olv(url, "tokens", "create", "officer1")
        _verify_a_few(url, tmp_path, 5)

        user = primary.user
        _run_block("backup-commands", _shell_env(primary, backup_folder), user)
        assert len(list((backup_folder / "base").iterdir())) == 1

        # After the backup: only the WAL archive holds these.
        _olv(url, "users", "add", "admin1", "--role", "admin", stdin=PASSWORD + "\n")
        _olv(url, "tokens", "create", "admin1")
        _verify_a_few(url, tmp_path, 7)
        _wait_archived(url)
        before = _contents(url)
        assert before["audit_record"][0] == 12, before
        assert before["users"][0] == 2 and before["bob_record"][0] >= 2, before

        # The loss: the server dies and its data directory is gone.
        primary.process.kill()
        primary.process.wait(30)
        assert primary.data is not None
        _remove_while_its_children_exit(primary.data)

    def restore(data_dir: Path, owner: str | None) -> None:
        env = {
            "PATH": "/usr/bin:/bin",
            "OLV_BACKUP": str(backup_folder),
            "PGDATA": str(data_dir),
        }
        _run_block("restore-commands", env, owner)

    with private_postgres(populate=restore) as restored:
        _wait_out_of_recovery(restored.url)
        after = _contents(restored.url)
        assert after == before
        # And OLV reads it: the BoB and the audit trail are back.
        assert data.VIN_OK in _olv(restored.url, "bob", "lookup", data.VIN_OK)
        assert len(_olv(restored.url, "audit", "show").splitlines()) == 12


def _remove_while_its_children_exit(folder: Path) -> None:
    """Remove a killed server's data directory. Its children (WAL writer, archiver) outlive
    the postmaster by a moment and still add and delete files in it meanwhile: a file gone
    under the removal is what was wanted, a folder that gained a file is removed at the next
    pass, and the removal goes on until the folder is gone."""

    def gone_already(function: object, path: str, exc_info: tuple[object, ...]) -> None:
        error = exc_info[1]
        if isinstance(error, FileNotFoundError):
            return
        if isinstance(error, OSError) and error.errno == errno.ENOTEMPTY:
            return
        raise error  # type: ignore[misc]

    deadline = time.monotonic() + 30
    while folder.exists():
        shutil.rmtree(folder, onerror=gone_already)
        if folder.exists():
            assert time.monotonic() < deadline, f"{folder} kept being written to"
            time.sleep(0.1)
