"""A private PostgreSQL server for tests that must hang or stop it (never the shared one).

``initdb`` into a fresh directory, ``postgres`` on its own loopback port and socket directory;
:meth:`PrivatePostgres.stop_all` SIGSTOPs the postmaster and every process it started (each
backend leads a process group of its own, so a group signal would miss them).
:func:`private_replication` adds a hot standby made with ``pg_basebackup -R``, for the replica
and failover drills. The binaries are taken from ``PATH`` or Debian's
``/usr/lib/postgresql/<version>/bin``; without them the test skips with the reason (fails
under ``OLV_TEST_REQUIRE_PG=1``). PostgreSQL refuses to run as root: as root the server runs
as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.helpers.free_ports import free_port


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:  # the directory of the real binary, which holds pg_basebackup beside it
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _unavailable(reason: str) -> None:
    if os.environ.get("OLV_TEST_REQUIRE_PG") == "1":
        pytest.fail(f"a private PostgreSQL is required but {reason}")
    print(f"skipping: {reason}")
    pytest.skip(reason)


@dataclass
class PrivatePostgres:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    data: Path | None = None  # the data directory
    user: str | None = None  # the account the server runs as (None: this one)
    bin_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop_all(self) -> None:
        """SIGSTOP the postmaster and all its backends: connections stay open, nothing answers."""
        os.kill(self.process.pid, signal.SIGSTOP)  # first: it starts no new backend meanwhile
        for pid in child_pids(self.process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def continue_all(self) -> None:
        for pid in child_pids(self.process.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Stop the server at once, as a crash would (SIGQUIT: no checkpoint, no goodbye)."""
        _shut_down(self.process)

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        """Run one statement in autocommit; its rows (none for a statement without)."""
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", autocommit=True, connect_timeout=5
        ) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def promote(self) -> None:
        """A standby becomes a primary (``pg_promote`` waits until it accepts writes)."""
        assert self.sql("SELECT pg_promote(true, 30)") == [(True,)]

    def wait_until_replayed(self, primary: PrivatePostgres, seconds: float = 30) -> None:
        """Wait until this standby has replayed everything the primary has written so far."""
        target = primary.sql("SELECT pg_current_wal_lsn()")[0][0]
        deadline = time.monotonic() + seconds
        while not self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby has not replayed up to {target}")
            time.sleep(0.05)


def child_pids(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def server_user() -> str | None:
    """The account a private server runs as: ``postgres`` when running as root, else None
    (this account); skips the test when root has no such account."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        _unavailable("running as root and there is no 'postgres' user to run the server")
        raise AssertionError("unreachable") from None


@contextmanager
def private_postgres(
    settings: tuple[str, ...] | dict[str, str] = (),
    populate: Callable[[Path, str | None], None] | None = None,
) -> Iterator[PrivatePostgres]:
    """A fresh server; ``settings``: extra server settings (``name=value`` strings or a
    mapping). With ``populate``, the data directory is not made by ``initdb`` but by
    ``populate(data, user)`` (a restore): the server is yielded once it accepts connections
    (recovery, if any, may still run)."""
    if isinstance(settings, dict):
        settings = tuple(f"{key}={value}" for key, value in settings.items())
    with _private_home() as (bin_dir, user, home):
        data = home / "data"
        if populate is None:
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                user=user,
                check=True,
                capture_output=True,
                timeout=120,
            )
        else:
            populate(data, user)
        with _running(bin_dir, user, home, data, settings) as server:
            yield server


@contextmanager
def private_replication(
    primary_settings: tuple[str, ...] = (), standby_settings: tuple[str, ...] = ()
) -> Iterator[tuple[PrivatePostgres, PrivatePostgres]]:
    """A primary and a hot standby streaming from it (``pg_basebackup -R``), each a
    :func:`private_postgres` of its own, with extra ``name=value`` server settings each."""
    with private_postgres(primary_settings) as primary, _private_home() as (bin_dir, user, home):
        data = home / "data"
        subprocess.run(
            [
                str(bin_dir / "pg_basebackup"),
                *("-D", str(data), "-h", "127.0.0.1", "-p", str(primary.port)),
                *("-U", "postgres", "-R", "-X", "stream", "-c", "fast"),
            ],
            user=user,
            check=True,
            capture_output=True,
            timeout=120,
        )
        with _running(bin_dir, user, home, data, standby_settings) as standby:
            standby.wait_until_replayed(primary)
            yield primary, standby


@contextmanager
def _private_home() -> Iterator[tuple[Path, str | None, Path]]:
    """(the server binaries, the user to run them as, a fresh directory it may write)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        _unavailable("the PostgreSQL server binaries (initdb, postgres) are not installed")
        raise AssertionError("unreachable")
    user = server_user()
    # A directory of its own under the system's temporary directory: pytest's own is private
    # to the user running the tests, so a server running as another user could not enter it.
    home = Path(tempfile.mkdtemp(prefix="olv-private-pg-"))
    if user is not None:
        shutil.chown(home, user)
    try:
        yield bin_dir, user, home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def _running(
    bin_dir: Path, user: str | None, home: Path, data: Path, settings: tuple[str, ...] = ()
) -> Iterator[PrivatePostgres]:
    port = free_port()
    log = home / "server.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    *("-D", str(data), "-p", str(port)),
                    *("-c", "listen_addresses=127.0.0.1"),
                    *("-c", f"unix_socket_directories={home}"),
                    *("-c", "fsync=off"),
                    *(arg for setting in settings for arg in ("-c", setting)),
                ],
                user=user,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C goes to pytest, not to it
            )
        server = PrivatePostgres(port, process, log, data, user, bin_dir)
        _wait_ready(server, log)
        yield server
    finally:
        if process is not None:
            _shut_down(process)


def _wait_ready(server: PrivatePostgres, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"private PostgreSQL exited:\n{log.read_text()}")
        try:
            with psycopg.connect(
                host="127.0.0.1", port=server.port, user="postgres", connect_timeout=2
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _shut_down(process: subprocess.Popen[bytes]) -> None:
    for pid in [*child_pids(process.pid), process.pid]:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    process.send_signal(signal.SIGQUIT)  # immediate shutdown: nothing to keep
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
