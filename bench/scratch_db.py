"""A throw-away database for one bench run, set up with the project's own commands."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from olv import db

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(kind: str, workdir: Path, pg_url: str) -> Iterator[str]:
    """A new SQLite file in ``workdir``, or a PostgreSQL database created and dropped here."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    admin = make_url(pg_url)
    name = f"olv_soap_bench_{os.getpid()}_{random.randrange(10**6)}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        sys.exit(f"cannot create a PostgreSQL database through {admin!r}: {exc}")
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(url: str) -> str:
    """The PostgreSQL database's name (its backends' titles carry it); '' for SQLite."""
    parsed = make_url(url)
    return "" if parsed.get_backend_name() == "sqlite" else parsed.database or ""


def olv(*args: str, env: dict[str, str]) -> None:
    """Run an ``olv`` command as an operator would; exit the bench if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "olv", *args], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"olv {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def analyze(url: str) -> None:
    """Planner statistics, as a production store would have them after its first load."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            if not db.is_sqlite(url):
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("ANALYZE"))
            conn.commit()
    finally:
        engine.dispose()


def count_rows(url: str, table: str) -> int:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()
