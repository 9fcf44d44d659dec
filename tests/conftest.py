"""Shared fixtures.

Database tests take the ``db_url`` fixture, which runs each test on SQLite and, when it is
reachable, on PostgreSQL. ``OLV_TEST_PG_URL`` names the PostgreSQL server (default: the local
one with trust auth, database ``test``); ``OLV_TEST_REQUIRE_PG=1`` (set by CI) turns an
unreachable server into a failure instead of a skip.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from olv import db
from olv.config import get_settings
from olv.serving import settle_gc
from tests.helpers.day_change import wait_past_midnight
from tests.helpers.portal import TEST_SECRET_KEY

PG_URL = os.environ.get("OLV_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--day-guard-minutes",
        type=float,
        default=15.0,
        help="wait for midnight UTC first if it is closer than this (0 turns the wait off)",
    )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` runs two workers per core: most of a test's time goes to waiting on the
    servers, subprocesses and databases it started (which do their work on the same cores), so
    with one worker per core the cores sat idle much of the run."""
    return 2 * (os.cpu_count() or 1)


# The files that take longest (about 40-70 s each on 2 cores), first: each file runs on one
# worker, in collection order, and a long file picked up last kept one worker busy after the
# others had finished. A file missing from this list only runs in its usual place.
LONGEST_FIRST = (
    "test_idcards_cli.py",
    "test_service_deadline.py",
    "test_portal_idaho_conformance.py",
    "test_spec_conformance.py",
    "test_service_hostile_and_auth.py",
    "test_portal_api_e2e.py",
    "test_pgbouncer.py",
    "test_xsd_schemas.py",
    "test_bob_cli.py",
    "test_portal_shared_state.py",
    "test_portal_shared_signin.py",
    "test_olv_failover_drill.py",
    "test_portal_compliance_load.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: at for at, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


def pytest_collection_finish(session: pytest.Session) -> None:
    """Settle the collector as the servers do once started (``olv.serving.settle_gc``): each
    test process holds every test module, the apps and their libraries, and at the default
    thresholds the collector walked all of that again and again while the portal's pages ran
    in-process."""
    settle_gc()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before any module computes "today": a run must not straddle a change of date."""
    minutes = session.config.getoption("--day-guard-minutes")
    if minutes > 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        say = reporter.write_line if reporter is not None else print
        wait_past_midnight(minutes * 60, say=say)


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable" here
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    db.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head."""
    with fresh_pg_database() as url:
        yield url


# One migrated database per test process, copied for every fresh database: a copy takes a
# fraction of a second where running the migrations takes seconds.
_pg_template: str | None = None


def _admin_engine() -> Engine:
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def _url_of(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def _migrated_template() -> str:
    global _pg_template
    if _pg_template is None:
        name = f"olv_template_{uuid.uuid4().hex[:10]}"
        admin = _admin_engine()
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        _pg_template = name  # dropped at the end of the run, also when migrating fails
        db.upgrade(_url_of(name))  # closes its connections: a template must have none
    return _pg_template


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _pg_template is not None:
        with _admin_engine().connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{_pg_template}" WITH (FORCE)'))


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Create a PostgreSQL database migrated to head, and finally drop it (skips if
    unreachable)."""
    problem = _pg_reachable()
    if problem:
        if os.environ.get("OLV_TEST_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required but unreachable at {PG_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")
    template = _migrated_template()
    name = f"olv_test_{uuid.uuid4().hex[:10]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _url_of(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _empty_all(url: str) -> None:
    """Every table emptied and every used sequence restarted. Only the tables holding rows are
    truncated: TRUNCATE makes new files for each table named, over a second for all ~30 on a
    busy machine, and most tests fill a few. (Not DELETE: append-only tables refuse it.)"""
    engine = db.make_engine(url)
    tables = [t.name for t in db.Base.metadata.sorted_tables]
    try:
        with engine.begin() as conn:
            probe = " UNION ALL ".join(
                f"SELECT '{t}' WHERE EXISTS (SELECT 1 FROM \"{t}\")" for t in tables
            )
            full = conn.execute(text(probe)).scalars().all()
            used = (
                conn.execute(
                    text(
                        "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename)"
                        " FROM pg_sequences WHERE last_value IS NOT NULL"
                    )
                )
                .scalars()
                .all()
            )
            statements = [f"ALTER SEQUENCE {name} RESTART" for name in used]
            if full:
                names = ", ".join(f'"{t}"' for t in full)
                statements.insert(0, f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            if statements:
                conn.execute(text("; ".join(statements)))
    finally:
        engine.dispose()  # also when a test left the schema unusable: no connection leaks


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database shared by one test module (for tests that start servers)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("moddb") / "olv.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        with fresh_pg_database() as url:
            yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """A migrated, empty database; also exported as ``OLV_DATABASE_URL`` for CLI runs."""
    import bob_loader.models  # noqa: F401  (so truncation sees every table)
    import enforcement.models  # noqa: F401
    import idcards.models  # noqa: F401
    import portal.card_issuers  # noqa: F401
    import portal.models  # noqa: F401
    import service.models  # noqa: F401

    if request.param == "sqlite":
        path = tmp_path / "olv.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_database")
        _empty_all(url)
    monkeypatch.setenv("OLV_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees another test's OLV_* environment."""
    for key in list(os.environ):
        if key.startswith("OLV_") and not key.startswith("OLV_TEST_"):
            monkeypatch.delenv(key)
    # A known key, so tests can read sealed secrets; without one the portal makes a key file.
    monkeypatch.setenv("OLV_PORTAL_SECRET_KEY", TEST_SECRET_KEY)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the shared specification folder is absent ({SHARED}); interop tests need it")
    return SHARED


@pytest.fixture(scope="session")
def shared_or_none() -> Path | None:
    """The shared folder if present; schema checks against the reference then also run."""
    return SHARED if SHARED.is_dir() else None
