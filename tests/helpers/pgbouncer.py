"""A private PgBouncer in transaction mode, in front of a PostgreSQL server (for the pooler tests).

The shipped configuration (``deploy/pgbouncer/pgbouncer.ini``) with this test's own port,
socket and log directory, trust authentication and the server it fronts: what production
runs, on loopback. The admin console (``pgbouncer`` database, user ``postgres``) lets a test
drop the server connections (``KILL``, ``RECONNECT``) or the test restarts the process. Without
the binary the test skips with the reason (fails under ``OLV_TEST_REQUIRE_PG=1``). PgBouncer
refuses to run as root: as root it runs as the ``postgres`` user.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.helpers.free_ports import free_port
from tests.helpers.soap import START_SECONDS, stop_process

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "pgbouncer" / "pgbouncer.ini"


def _binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def _unavailable(reason: str) -> None:
    if os.environ.get("OLV_TEST_REQUIRE_PG") == "1":
        pytest.fail(f"PgBouncer is required but {reason}")
    print(f"skipping: {reason}")
    pytest.skip(reason)


def local_config(shipped: str, *, port: int, home: Path, server_port: int) -> str:
    """The shipped configuration with this test's addresses, files and trust authentication:
    every other setting (pool mode, pool sizes, time-outs) is the shipped one."""
    values = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": str(home),
        "logfile": str(home / "pgbouncer.log"),
        "pidfile": str(home / "pgbouncer.pid"),
        "auth_type": "trust",
        "auth_file": str(home / "userlist.txt"),
        "admin_users": "postgres",
        "stats_users": "postgres",
    }
    lines: list[str] = []
    for line in shipped.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in values or key.startswith(("auth_", "client_tls", "server_tls")):
            continue  # replaced below (or no TLS between processes of one test)
        if line.strip() == "[databases]":
            lines.append(line)
            lines.append(f"* = host=127.0.0.1 port={server_port}")
            continue
        if re.match(r"^\s*olv\s*=", line):
            continue  # the shipped entry names the production server
        lines.append(line)
        if line.strip() == "[pgbouncer]":
            lines.extend(f"{k} = {v}" for k, v in values.items())
    return "\n".join(lines) + "\n"


@dataclass
class PrivateBouncer:
    port: int
    home: Path
    binary: str
    user: str | None
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        """OLV's URL for ``database`` through this PgBouncer (transaction pooling)."""
        return (
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}?pool_mode=transaction"
        )

    @property
    def log(self) -> Path:
        return self.home / "pgbouncer.log"

    def start(self) -> None:
        with (self.home / "stdout.log").open("ab") as sink:
            self.process = subprocess.Popen(
                [self.binary, str(self.home / "pgbouncer.ini")],
                user=self.user,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited:\n{self.log.read_text(errors='replace')}")
            try:
                self.admin("SHOW VERSION")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)  # SIGTERM: PgBouncer closes everything at once
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def admin(self, command: str) -> list[tuple[object, ...]]:
        """One command on the admin console (``KILL olv``, ``RECONNECT``, ``SHOW POOLS``)."""
        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            dbname="pgbouncer",
            user="postgres",
            autocommit=True,
            connect_timeout=2,
        ) as conn:
            cursor = conn.execute(command, prepare=False)
            return cursor.fetchall() if cursor.description else []


@contextmanager
def private_pgbouncer(server_port: int) -> Iterator[PrivateBouncer]:
    """A PgBouncer on its own loopback port in front of the PostgreSQL at ``server_port``."""
    binary = _binary()
    if binary is None:
        _unavailable("the pgbouncer binary is not installed")
        raise AssertionError("unreachable")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run PgBouncer")
            raise AssertionError("unreachable") from None
    home = Path(tempfile.mkdtemp(prefix="olv-pgbouncer-"))
    port = free_port()
    (home / "pgbouncer.ini").write_text(
        local_config(SHIPPED.read_text(), port=port, home=home, server_port=server_port)
    )
    (home / "userlist.txt").write_text('"postgres" ""\n')
    if user is not None:
        for path in (home, *home.iterdir()):
            shutil.chown(path, user)
    bouncer = PrivateBouncer(port, home, binary, user)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(home, ignore_errors=True)
