"""Logs hold no insured data, also when a verification fails with an exception.

Library exceptions quote the values they choke on; a VIN in a corrupt row must not reach the
log through the exception path. Each database gets a row that makes the lookup fail with the
VIN in the error message: SQLite (typeless) a date column holding the VIN, PostgreSQL a view
whose date column raises an error naming the VIN.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.helpers import data
from tests.helpers.soap import codes_of, envelope, post, request_xml, response_element, soap_server

CORRUPT_VIN = "1FTFW1ET5DFC99999"


def _corrupt(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        policy_id = conn.execute(
            text("SELECT id FROM policy WHERE policy_key = 'POK'")
        ).scalar_one()
        if url.startswith("sqlite"):
            conn.execute(
                text(
                    "INSERT INTO coverage (policy_id, naic, vin, effective_date)"
                    " VALUES (:p, :naic, :vin, :vin)"
                ),
                {"p": policy_id, "naic": data.NAIC, "vin": CORRUPT_VIN},
            )
        else:
            conn.execute(text("ALTER TABLE coverage RENAME TO coverage_rows"))
            conn.execute(
                text(
                    "CREATE FUNCTION olv_test_boom(v text) RETURNS date AS $$"
                    " BEGIN RAISE EXCEPTION 'corrupt row for %', v; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE VIEW coverage AS SELECT id, policy_id, naic, vin,"
                    " olv_test_boom(vin) AS effective_date, expiration_date, cancel_date"
                    " FROM coverage_rows"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO coverage_rows (policy_id, naic, vin, effective_date)"
                    " VALUES (:p, :naic, :vin, CURRENT_DATE)"
                ),
                {"p": policy_id, "naic": data.NAIC, "vin": CORRUPT_VIN},
            )
    engine.dispose()


def test_logs_hold_no_insured_data_when_a_verification_fails(db_url: str, tmp_path: Path) -> None:
    data.load_policies(db_url, tmp_path)
    _corrupt(db_url)
    with soap_server({"OLV_DATABASE_URL": db_url}, tmp_path) as running:
        request = request_xml("00200809", key="P-OK", vin=CORRUPT_VIN)
        codes = codes_of(response_element(post(running.url(), envelope(request))))
        log = running.log
    assert codes == (
        "Unconfirmed",
        ["SYSU"],
    )  # the failure happened, and was answered as SPEC §1 step 1 says
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    failures = [entry for entry in lines if entry["level"] == "error"]
    assert failures, "the failing verification was not logged at all"
    text_of_log = log.read_text()
    for secret in (CORRUPT_VIN, CORRUPT_VIN[:10], "P-OK", "POK"):
        assert secret not in text_of_log
