"""Enforcement (SPEC §6): registrants, insurer transactions and their acknowledgements,
coverage periods, cases, activities, letters, MVF requests, BoB absences, the run journal.

Written by hand to match ``enforcement/models.py``.

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0004"
branch_labels = None
depends_on = None

Stamp = sa.DateTime(timezone=True)
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _fk(table: str, column: str, target: str, ondelete: str | None = None) -> sa.ForeignKey:
    referred = target.split(".")[0]
    return sa.ForeignKey(target, ondelete=ondelete, name=f"fk_{table}_{column}_{referred}")


def _registration(table: str, ondelete: str = "CASCADE", nullable: bool = False) -> sa.Column:
    return sa.Column(
        "registration_id",
        sa.Integer,
        _fk(table, "registration_id", "registrations.id", ondelete),
        nullable=nullable,
    )


def _append_only(table: str) -> None:
    """The database itself refuses to change or delete a row of ``table`` (SPEC §6: every
    transition is an activity, never edited, only added to)."""
    message = f"{table} rows are only ever added"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )


def upgrade() -> None:
    op.create_table(
        "registrants",
        _registration("registrants"),
        sa.Column("reg_class", sa.String(10)),
        sa.Column("entity_type", sa.SmallInteger),
        sa.Column("last_name", sa.String(100)),
        sa.Column("first_name", sa.String(50)),
        sa.Column("middle_name", sa.String(50)),
        sa.Column("dob", sa.Date),
        sa.Column("dl_number", sa.String(20)),
        sa.Column("fein", sa.String(9)),
        sa.Column("zip", sa.String(10)),
        sa.Column("address1", sa.String(100)),
        sa.Column("address2", sa.String(100)),
        sa.Column("city", sa.String(60)),
        sa.Column("reg_effective", sa.Date),
        sa.Column("reg_expires", sa.Date),
        sa.Column("status", sa.String(11)),
        sa.Column("resolve_key", sa.String(40)),
        sa.PrimaryKeyConstraint("registration_id", name="pk_registrants"),
        sa.CheckConstraint("entity_type IN (1, 2)", name="ck_registrants_entity_type"),
        sa.CheckConstraint(
            "status IN ('active', 'expired', 'surrendered')", name="ck_registrants_status"
        ),
    )
    op.create_index("ix_registrants_resolve_key", "registrants", ["resolve_key"])

    op.create_table(
        "iies_files",
        sa.Column("id", RowId, nullable=False),
        sa.Column("naic", sa.String(5)),
        sa.Column("channel", sa.String(4), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64)),
        sa.Column("received_at", Stamp, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("error_code", sa.String(3)),
        sa.Column("error", sa.Text),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("matched", sa.Integer, nullable=False),
        sa.Column("resolved", sa.Integer, nullable=False),
        sa.Column("edit_errors", sa.Integer, nullable=False),
        sa.Column("unresolved", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_iies_files"),
        sa.CheckConstraint("status IN ('accepted', 'rejected')", name="ck_iies_files_status"),
        sa.CheckConstraint("channel IN ('sftp', 'cli', 'api')", name="ck_iies_files_channel"),
    )
    op.create_index("ix_iies_files_naic_received_at", "iies_files", ["naic", "received_at"])

    op.create_table(
        "iies_transactions",
        sa.Column("id", RowId, nullable=False),
        sa.Column(
            "file_id",
            RowId,
            _fk("iies_transactions", "file_id", "iies_files.id"),
            nullable=False,
        ),
        sa.Column("txn_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(3), nullable=False),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("effective_date", sa.Date),
        sa.Column("policy_number", sa.String(50)),
        sa.Column("policy_type", sa.String(1)),
        sa.Column("entity_type", sa.String(1)),
        sa.Column("last_name", sa.String(100)),
        sa.Column("first_name", sa.String(50)),
        sa.Column("middle_name", sa.String(50)),
        sa.Column("dob", sa.Date),
        sa.Column("dl_number", sa.String(20)),
        sa.Column("fein", sa.String(9)),
        sa.Column("zip", sa.String(10)),
        sa.Column("vin", sa.String(25)),
        sa.Column("plate", sa.String(12)),
        sa.Column("vehicle_year", sa.String(4)),
        sa.Column("make", sa.String(20)),
        sa.Column("tracking_number", sa.String(20)),
        sa.Column("received_at", Stamp, nullable=False),
        sa.Column("disposition", sa.String(1), nullable=False),
        sa.Column("match_rule", sa.String(2)),
        sa.Column("codes", sa.String(100), nullable=False),
        _registration("iies_transactions", "SET NULL", nullable=True),
        sa.Column("disposed_at", Stamp, nullable=False),
        sa.Column("rematch_until", sa.Date),
        sa.Column("posted_on", sa.Date),
        sa.Column("returned_at", Stamp),
        sa.PrimaryKeyConstraint("id", name="pk_iies_transactions"),
        sa.UniqueConstraint("naic", "txn_id", name="uq_iies_transactions_naic"),
        sa.CheckConstraint(
            "disposition IN ('H', 'R', 'E', 'U')", name="ck_iies_transactions_disposition"
        ),
    )
    for name, columns in (
        ("ix_iies_transactions_file_id", ["file_id"]),
        ("ix_iies_transactions_registration_id", ["registration_id"]),
        ("ix_iies_transactions_naic_disposed_at", ["naic", "disposed_at"]),
        ("ix_iies_transactions_rematch_until", ["rematch_until"]),
        ("ix_iies_transactions_posted_on", ["posted_on"]),
        ("ix_iies_transactions_tracking_number", ["tracking_number"]),
    ):
        op.create_index(name, "iies_transactions", columns)

    txn = "iies_transactions.id"
    op.create_table(
        "coverage_periods",
        sa.Column("id", RowId, nullable=False),
        _registration("coverage_periods"),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("policy_number", sa.String(50)),
        sa.Column("starts", sa.Date, nullable=False),
        sa.Column("ends", sa.Date),
        sa.Column("source", sa.String(5), nullable=False),
        sa.Column("opened_by", RowId, _fk("coverage_periods", "opened_by", txn)),
        sa.Column("closed_by", RowId, _fk("coverage_periods", "closed_by", txn)),
        sa.Column("rescinded", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_coverage_periods"),
        sa.CheckConstraint(
            "source IN ('edi', 'proof', 'live', 'bob')", name="ck_coverage_periods_source"
        ),
    )
    op.create_index(
        "ix_coverage_periods_registration_id_starts",
        "coverage_periods",
        ["registration_id", "starts"],
    )

    op.create_table(
        "cases",
        sa.Column("id", RowId, nullable=False),
        _registration("cases"),
        sa.Column("vin", sa.String(25), nullable=False),
        sa.Column("plate", sa.String(12), nullable=False),
        sa.Column("state", sa.String(2), nullable=False),
        sa.Column("case_state", sa.String(3), nullable=False),
        sa.Column("opened_on", sa.Date, nullable=False),
        sa.Column("open_activity", sa.String(3), nullable=False),
        sa.Column("naic", sa.String(5)),
        sa.Column("lapse_starts", sa.Date),
        sa.Column("next_due", sa.Date),
        sa.Column("closed_on", sa.Date),
        sa.Column("close_activity", sa.String(3)),
        sa.Column("reason", sa.String(3)),
        sa.Column("lapse_days", sa.Integer),
        sa.Column("civil_penalty_eligible", sa.Boolean),
        sa.PrimaryKeyConstraint("id", name="pk_cases"),
    )
    op.create_index("ix_cases_registration_id", "cases", ["registration_id"])
    op.create_index("ix_cases_vin", "cases", ["vin"])
    op.create_index("ix_cases_open_next_due", "cases", ["closed_on", "next_due"])

    op.create_table(
        "activities",
        sa.Column("id", RowId, nullable=False),
        _registration("activities"),
        sa.Column("case_id", RowId, _fk("activities", "case_id", "cases.id")),
        sa.Column("activity_date", sa.Date, nullable=False),
        sa.Column("code", sa.String(3), nullable=False),
        sa.Column("reason", sa.String(3)),
        sa.Column("doc_id", sa.String(10)),
        sa.Column("case_state", sa.String(3)),
        sa.Column("caused_by", sa.String(60), nullable=False),
        sa.Column("transaction_id", RowId, _fk("activities", "transaction_id", txn)),
        sa.Column("recorded_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activities"),
    )
    op.create_index(
        "ix_activities_registration_id_on", "activities", ["registration_id", "activity_date"]
    )
    op.create_index("ix_activities_case_id", "activities", ["case_id"])
    op.create_index("ix_activities_doc_id", "activities", ["doc_id"])
    _append_only("activities")

    op.create_table(
        "letters",
        sa.Column("doc_id", sa.String(10), nullable=False),
        sa.Column("type", sa.String(3), nullable=False),
        sa.Column("case_id", RowId, _fk("letters", "case_id", "cases.id")),
        _registration("letters"),
        sa.Column("letter_date", sa.Date, nullable=False),
        sa.Column("respond_by", sa.Date),
        sa.Column("addressee", sa.String(200), nullable=False),
        sa.Column("address1", sa.String(100)),
        sa.Column("address2", sa.String(100)),
        sa.Column("city", sa.String(60)),
        sa.Column("zip", sa.String(10)),
        sa.Column("vin", sa.String(25), nullable=False),
        sa.Column("plate", sa.String(12), nullable=False),
        sa.Column("state", sa.String(2), nullable=False),
        sa.Column("undeliverable_on", sa.Date),
        sa.Column("created_at", Stamp, nullable=False),
        sa.PrimaryKeyConstraint("doc_id", name="pk_letters"),
        sa.CheckConstraint("length(doc_id) = 10", name="ck_letters_doc_id_length"),
    )
    op.create_index("ix_letters_letter_date", "letters", ["letter_date"])
    op.create_index("ix_letters_case_id", "letters", ["case_id"])

    op.create_table(
        "mvf_requests",
        sa.Column("id", RowId, nullable=False),
        sa.Column("tracking_number", sa.String(20), nullable=False),
        _registration("mvf_requests"),
        sa.Column("case_id", RowId, _fk("mvf_requests", "case_id", "cases.id")),
        sa.Column("naic", sa.String(5), nullable=False),
        sa.Column("policy_number", sa.String(50)),
        sa.Column("effective_date", sa.Date, nullable=False),
        sa.Column("sent_on", sa.Date, nullable=False),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("live_status", sa.String(11)),
        sa.Column("answer", sa.String(3)),
        sa.Column("answered_by", RowId, _fk("mvf_requests", "answered_by", txn)),
        sa.Column("answered_on", sa.Date),
        sa.Column("returned_at", Stamp),
        sa.PrimaryKeyConstraint("id", name="pk_mvf_requests"),
        sa.UniqueConstraint("tracking_number", name="uq_mvf_requests_tracking_number"),
    )
    op.create_index("ix_mvf_requests_naic_sent_on", "mvf_requests", ["naic", "sent_on"])
    op.create_index("ix_mvf_requests_registration_id", "mvf_requests", ["registration_id"])

    op.create_table(
        "bob_absences",
        _registration("bob_absences"),
        sa.Column("missing_loads", sa.Integer, nullable=False),
        sa.Column("first_missing_on", sa.Date),
        sa.Column("last_checked_month", sa.String(7)),
        sa.Column("broadcast_on", sa.Date),
        sa.Column("broadcast_status", sa.String(11)),
        sa.PrimaryKeyConstraint("registration_id", name="pk_bob_absences"),
    )

    op.create_table(
        "iies_run_steps",
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("step", sa.String(40), nullable=False),
        sa.Column("done_at", Stamp, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("run_date", "step", name="pk_iies_run_steps"),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS activities_append_only ON activities")
        op.execute("DROP FUNCTION IF EXISTS activities_append_only()")
    for table in (
        "iies_run_steps",
        "bob_absences",
        "mvf_requests",
        "letters",
        "activities",
        "cases",
        "coverage_periods",
        "iies_transactions",
        "iies_files",
        "registrants",
    ):
        op.drop_table(table)
