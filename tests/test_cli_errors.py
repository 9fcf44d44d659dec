"""A newcomer's mistakes get one ``error:`` line and the right exit code, never a traceback.

Each row runs ``olv`` in a fresh working directory (the embedded SQLite default, no ``OLV_*``
settings) unless the row sets something up first: forked from the test worker's launcher
(``tests.helpers.prewarmed``: the same command in its own process, without a second of
imports each), and for the rows of :data:`ON_THE_EXECUTABLE` as the installed ``olv``
executable itself.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text

from olv import db
from tests.helpers import loopback, prewarmed
from tests.helpers.free_ports import free_port
from tests.helpers.soap import soap_server

OLV = str(Path(sys.executable).with_name("olv"))
# Run through the installed entry point too: its wrapper must not add a traceback of its own.
ON_THE_EXECUTABLE = {"debug-shows-traceback", "mysql-url", "workers-not-a-number"}
BANNER = "OLV SOAP service on"
VIN = "1HGCM82633A004352"

Setup = Callable[[Path], AbstractContextManager[dict[str, str]]]


@contextmanager
def nothing(_cwd: Path) -> Iterator[dict[str, str]]:
    yield {}


@contextmanager
def input_file(cwd: Path) -> Iterator[dict[str, str]]:
    (cwd / "acme.txt").write_text("not really a BoB file\n")
    yield {"file": "acme.txt"}


@contextmanager
def fifo(cwd: Path) -> Iterator[dict[str, str]]:
    os.mkfifo(cwd / "upload.txt")
    yield {"file": "upload.txt"}


@contextmanager
def schema_behind(cwd: Path) -> Iterator[dict[str, str]]:
    db.upgrade(f"sqlite:///{cwd / 'olv.db'}", "0001")  # a database from an older OLV
    yield {}


@contextmanager
def tables_missing(cwd: Path) -> Iterator[dict[str, str]]:
    # Claims the current revision but lacks the tables: only the query itself can tell.
    url = f"sqlite:///{cwd / 'olv.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bob_current"))
    engine.dispose()
    yield {}


@contextmanager
def postgres_down(_cwd: Path) -> Iterator[dict[str, str]]:
    port = free_port()  # bound once, then closed: nothing listens there
    yield {"port": str(port), "url": f"postgresql+psycopg://olv@127.0.0.1:{port}/olv"}


def held_port(reuseport: bool) -> Setup:
    @contextmanager
    def hold(_cwd: Path) -> Iterator[dict[str, str]]:
        with socket.socket() as sock:
            if reuseport:  # what a second server with SO_REUSEPORT would join silently
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            yield {"port": str(sock.getsockname()[1])}

    return hold


@contextmanager
def running_server(cwd: Path) -> Iterator[dict[str, str]]:
    url = f"sqlite:///{cwd / 'olv.db'}"  # the second server finds it as the default
    db.upgrade(url)
    with soap_server({"OLV_DATABASE_URL": url}, cwd) as server:
        yield {"port": server.base.rsplit(":", 1)[1]}
        # the refused second server took nothing away from the first
        assert server.process.poll() is None, server.log.read_text()
        assert loopback.get(server.url("/healthz"), timeout=5).status_code == 200


@dataclass(frozen=True)
class Mistake:
    id: str
    args: tuple[str, ...]
    code: int
    message: str  # a regular expression the error line must match
    env: dict[str, str] = field(default_factory=dict)
    setup: Setup = nothing
    traceback: bool = False


NO_SCHEMA = r"^error: no OLV database at .*olv\.db; run 'olv db upgrade' first"
PG_DOWN = r"^error: cannot connect to PostgreSQL at 127\.0\.0\.1:{port} .*Check OLV_DATABASE_URL$"
URL_FORMS = (
    r"OLV_DATABASE_URL='mysql://…' is not supported; use sqlite:///PATH or postgresql\+psycopg://"
)
PORT_TAKEN = r"^error: port {port} on 127\.0\.0\.1 is already in use by another program"

MISTAKES = [
    Mistake("stats-before-upgrade", ("bob", "stats"), 2, NO_SCHEMA),
    Mistake("audit-before-upgrade", ("audit", "show"), 2, NO_SCHEMA),
    Mistake("lookup-before-upgrade", ("bob", "lookup", VIN), 2, NO_SCHEMA),
    Mistake("load-before-upgrade", ("bob", "load", "{file}"), 2, NO_SCHEMA, setup=input_file),
    Mistake("serve-before-upgrade", ("soap", "serve", "--port", "{free}"), 2, NO_SCHEMA),
    Mistake(
        "schema-behind",
        ("bob", "stats"),
        2,
        r"^error: the SQLite database .* is at schema revision 0001, this OLV needs \w+; run 'olv db upgrade'",
        setup=schema_behind,
    ),
    Mistake(
        "stats-tables-missing",
        ("bob", "stats"),
        2,
        r"^error: the SQLite database .* lacks tables or columns OLV uses; run 'olv db upgrade' first$",
        setup=tables_missing,
    ),
    Mistake(
        "upgrade-postgres-down",
        ("db", "upgrade"),
        1,
        PG_DOWN,
        env={"OLV_DATABASE_URL": "{url}"},
        setup=postgres_down,
    ),
    Mistake(
        "stats-postgres-down",
        ("bob", "stats"),
        1,
        PG_DOWN,
        env={"OLV_DATABASE_URL": "{url}"},
        setup=postgres_down,
    ),
    Mistake(
        "sqlite-missing-directory",
        ("db", "upgrade"),
        1,
        r"^error: cannot open the SQLite database .*/absent/olv\.db: directory .*/absent does not exist",
        env={"OLV_DATABASE_URL": "sqlite:///absent/olv.db"},
    ),
    Mistake(
        "mysql-url",
        ("bob", "stats"),
        2,
        URL_FORMS,
        env={"OLV_DATABASE_URL": "mysql://olv:secret@db.example/olv"},
    ),
    Mistake(
        "mysql-url-upgrade",
        ("db", "upgrade"),
        2,
        URL_FORMS,
        env={"OLV_DATABASE_URL": "mysql://olv:secret@db.example/olv"},
    ),
    Mistake(
        "unknown-time-zone",
        ("bob", "stats"),
        2,
        r"^error: OLV_TIMEZONE: should be an IANA time zone name such as UTC or America/New_York$",
        env={"OLV_TIMEZONE": "Mars/Base"},
    ),
    Mistake(
        "workers-not-a-number",
        ("soap", "serve", "--port", "{free}"),
        2,
        r"^error: OLV_SOAP_WORKERS: should be a valid integer",
        env={"OLV_SOAP_WORKERS": "abc"},
    ),
    Mistake(
        "port-out-of-range",
        ("soap", "serve", "--port", "80000"),
        2,
        r"^error: port 80000 is not a TCP port; choose one from 1 to 65535$",
    ),
    Mistake(
        "port-not-a-number",
        ("soap", "serve", "--port", "eighty"),
        2,
        r"^error: Invalid value for '--port'.*\(see 'olv soap serve --help'\)$",
    ),
    Mistake(
        "port-held-by-another-program",
        ("soap", "serve", "--port", "{port}"),
        1,
        PORT_TAKEN,
        setup=held_port(reuseport=False),
    ),
    Mistake(
        "port-held-with-reuseport",
        ("soap", "serve", "--port", "{port}"),
        1,
        PORT_TAKEN,
        setup=held_port(reuseport=True),
    ),
    Mistake(
        "second-soap-server",
        ("soap", "serve", "--port", "{port}", "--workers", "1"),
        1,
        r"^error: port {port} is already served by another OLV server \(pid \d+\); stop it first",
        setup=running_server,
    ),
    Mistake(
        "import-a-directory",
        ("policies", "import", "{cwd}"),
        2,
        r"^error: .+: is a directory, not a regular file$",
    ),
    Mistake(
        "load-a-fifo",
        ("bob", "load", "{file}"),
        2,
        r"^error: upload\.txt: is a named pipe \(FIFO\), not a regular file$",
        setup=fifo,
    ),
    Mistake(
        "export-onto-a-directory",
        ("bob", "export", "--naic", "12345", "-o", "{cwd}"),
        2,
        r"^error: .+: is a directory; give the name of a file to write$",
    ),
    Mistake(
        "debug-shows-traceback",
        ("bob", "stats"),
        2,
        NO_SCHEMA,
        env={"OLV_DEBUG": "1"},
        traceback=True,
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.id for m in MISTAKES])
def test_mistake_gets_one_clear_line(mistake: Mistake, tmp_path: Path) -> None:
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    with mistake.setup(cwd) as values:
        values = {"cwd": str(cwd), "free": str(free_port()), **values}
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLV_")}
        env.update({k: v.format(**values) for k, v in mistake.env.items()})
        args = [arg.format(**values) for arg in mistake.args]
        if mistake.id in ON_THE_EXECUTABLE:
            run = subprocess.run(
                [OLV, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
            )
        else:
            run = prewarmed.run(args, env, cwd=cwd, timeout=60)
    output = run.stdout + run.stderr
    assert run.returncode == mistake.code, output
    assert ("Traceback" in output) is mistake.traceback, output
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, output
    assert re.search(mistake.message.format(**values), error_lines[0]), error_lines[0]
    assert BANNER not in output  # refused before claiming to serve
    assert "secret" not in output  # a password in the URL is never echoed
    if mistake.setup is nothing and "OLV_DATABASE_URL" not in mistake.env:
        assert not (cwd / "olv.db").exists()  # a read-only mistake creates no empty database
