"""Batch page CSV files as spreadsheets really save them: line ends of a lone CR ("CSV
(Macintosh)") are line ends, and whatever the csv module cannot read (a field over its size
limit) is invalid input, a 422 naming the line — never a 500."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from olv import db
from olv.config import Settings
from portal.app import create_app
from portal.errors import ApiError
from portal.settings import PortalSettings
from portal.web.batch import read_rows
from tests.helpers.portal import add_user
from tests.helpers.portal_web import sqlite_copy

VIN = "1HGCM82633A004352"
BIG = 140_000  # over the csv module's field limit (131,072), under the page's 2 MB file cap


@pytest.mark.parametrize(
    "text",
    [
        f"vin\r{VIN}\r5YJSA1E26HF000337\r",
        f"vin\r{VIN}\r5YJSA1E26HF000337",  # no line end after the last row
        f"vin\r\n{VIN}\r5YJSA1E26HF000337\n",  # mixed, as files edited on two systems are
        f'"vin"\r"{VIN}"\r"5YJSA1E26HF000337"\r',
    ],
    ids=["cr", "cr-no-last", "mixed", "quoted"],
)
def test_cr_only_line_ends_are_line_ends(text: str) -> None:
    assert read_rows(text, 10) == [{"vin": VIN}, {"vin": "5YJSA1E26HF000337"}]


def test_cr_only_line_ends_without_a_header() -> None:
    assert read_rows(f"{VIN}\rABC123,ID\r", 10) == [
        {"vin": VIN},
        {"plate": "ABC123", "plate_state": "ID"},
    ]


def test_a_line_break_inside_a_quoted_field_is_kept_in_the_field() -> None:
    rows = read_rows(f'vin,reason\r{VIN},"VIOL\rlate"\r', 10)
    assert rows == [{"vin": VIN, "reason": "VIOL\rlate"}]  # the row's own check refuses it later


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f'vin\n{VIN}\n"{"A" * BIG}"\n', 3),
        (f'"{"A" * BIG}"\n', 1),
        (f'vin\r{VIN}\r{VIN}\r"{"A" * BIG}"\r', 4),
    ],
    ids=["after-a-row", "first-line", "cr-line-ends"],
)
def test_a_field_the_csv_module_cannot_read_is_a_422_naming_the_line(text: str, line: int) -> None:
    with pytest.raises(ApiError) as raised:
        read_rows(text, 10)
    assert raised.value.status == 422
    assert f"line {line}" in raised.value.error, raised.value.error
    assert "field larger than field limit" in raised.value.error


@pytest.fixture
def client(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = sqlite_copy(sqlite_template, tmp_path, monkeypatch)
    engine = db.make_engine(url)
    token = add_user(engine, "dmv-clerk", "dmv")
    engine.dispose()
    app = create_app(Settings(database_url=url), PortalSettings())
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, headers=headers) as test_client:
        yield test_client


def test_the_page_answers_such_files_instead_of_failing(client: TestClient) -> None:
    def send(content: bytes):
        return client.post("/batch", files={"file": ("v.csv", content, "text/csv")})

    mac = send(f"vin\r{VIN}\r".encode())
    assert mac.status_code == 200, mac.text
    (row,) = list(csv.DictReader(io.StringIO(mac.text)))
    assert row["vin_asked"] == VIN and row["verdict"] == "unconfirmed"  # asked; nobody knows it

    big = send(f'vin\n"{"A" * BIG}"\n'.encode())
    assert big.status_code == 422, big.text
    error = big.json()
    assert (error["ok"], error["status"]) == (False, 422)
    assert "line 2" in error["error"] and "field larger than field limit" in error["error"]
