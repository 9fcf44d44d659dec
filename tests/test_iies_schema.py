"""The enforcement schema: migration 0009 creates exactly what ``enforcement/models.py``
declares, on SQLite and PostgreSQL, and every code table is consistent."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError

import enforcement.models  # noqa: F401  (registers the tables)
from enforcement import codes
from enforcement.models import Activity
from olv import db
from portal.models import Registration

ENFORCEMENT_TABLES = {
    "registrants",
    "iies_files",
    "iies_transactions",
    "coverage_periods",
    "cases",
    "activities",
    "letters",
    "mvf_requests",
    "bob_absences",
    "iies_run_steps",
}


def _table_of(diff: tuple) -> str | None:
    for part in diff[1:]:
        table = getattr(part, "table", None)
        name = getattr(table, "name", None) or getattr(part, "name", None)
        if isinstance(name, str):
            return name
        if isinstance(part, str):
            return part
    return None


def test_migration_matches_the_models(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), db.Base.metadata)
            tables = set(conn.dialect.get_table_names(conn))
    finally:
        engine.dispose()
    assert tables >= ENFORCEMENT_TABLES
    ours = [d for d in diffs if not isinstance(d, list) and _table_of(d) in ENFORCEMENT_TABLES]
    ours += [d for d in diffs if isinstance(d, list)]  # column-type changes come as lists
    ours = [d for d in ours if "portal_" not in repr(d)]
    assert ours == []


def test_every_code_table_is_well_formed() -> None:
    assert len([c for c in codes.REASONS if c.startswith("A")]) == 20
    assert len([c for c in codes.REASONS if c.startswith("R")]) == 36
    for table, pattern in (
        (codes.EDITS, r"E\d\d"),
        (codes.FILE_ERRORS, r"F\d\d"),
        (codes.ACTIVITIES, r"[A-Z]{3}"),
        (codes.CASE_STATES, r"[A-Z]{3}"),
        (codes.REASONS, r"[AR]\d\d"),
    ):
        assert all(re.fullmatch(pattern, code) and text for code, text in table.items())
    assert set(codes.LETTER_TYPES) <= set(codes.ACTIVITIES)
    assert set(codes.CASE_STATES) >= codes.CLOSED_STATES
    assert codes.describe("LTF") == codes.ACTIVITIES["LTF"]


def test_activities_are_only_ever_added(db_url: str) -> None:
    engine = db.make_engine(db_url)
    try:
        with db.transaction(engine) as session:
            registration = Registration(plate="ABC123", state="NY", vin="1HGCM82633A004352")
            session.add(registration)
            session.flush()
            session.add(
                Activity(
                    registration_id=registration.id,
                    activity_date=date(2026, 12, 3),
                    code="XLC",
                    caused_by="txn:1",
                    recorded_at=datetime.now(UTC),
                )
            )
        for change in (update(Activity).values(code="NBS"), delete(Activity)):
            with pytest.raises(DBAPIError, match="only ever added"), db.transaction(engine) as s:
                s.execute(change)
        with db.transaction(engine) as session:
            assert [a.code for a in session.query(Activity)] == ["XLC"]
    finally:
        engine.dispose()
