"""The logged query row has one shape (portal/querylog.py): the writer, the history page and
its CSV, and the API's QueryRecord all follow the query_log table's columns."""

from __future__ import annotations

import pytest

from portal import querylog
from portal.models import QueryLog
from portal.schemas import QueryRecord
from portal.web.history import CSV_COLUMNS


def test_a_row_to_log_has_exactly_the_columns_of_the_table() -> None:
    values = dict.fromkeys(querylog.COLUMNS)
    assert querylog.new_row(**values) == values
    with pytest.raises(ValueError, match=r"missing \['latency_ms'\], unknown \[\]"):
        querylog.new_row(**{k: v for k, v in values.items() if k != "latency_ms"})
    with pytest.raises(ValueError, match=r"missing \[\], unknown \['extra'\]"):
        querylog.new_row(**values, extra=1)


def test_the_columns_are_the_tables_in_order_and_the_csv_names_the_id_query_id() -> None:
    assert tuple(c.key for c in QueryLog.__table__.columns) == querylog.COLUMNS
    assert querylog.COLUMNS[:3] == ("id", "at", "username")
    assert ("query_id", *querylog.COLUMNS[1:]) == CSV_COLUMNS


def test_the_api_record_is_the_row_with_three_fields_renamed() -> None:
    renamed = {"id": "query_id", "verification_date": "date", "reason_codes": "reasons"}
    assert list(QueryRecord.model_fields) == [renamed.get(c, c) for c in querylog.COLUMNS]
