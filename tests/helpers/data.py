"""A small policy store covering every branch of the decision table (dates relative to today)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from olv import db
from service.store import SqlPolicyStore
from tests.helpers.soap import today

NAIC = "10001"
OTHER_NAIC = "10002"
VIN_OK = "1HGCM82633A004352"
VIN_CANCELLED = "2T1BURHE0JC014706"
VIN_EXPIRED = "5YJSA1E26HF000337"
VIN_REVIEW = "1FTFW1ET5DFC10312"
VIN_SHORT = "AB12345"  # pre-1981 style, legitimate
VIN_NOWHERE = "3VWFE21C04M000001"


def policy_csv() -> str:
    d = today().date()

    def iso(delta: int) -> str:
        return (d + timedelta(days=delta)).isoformat()

    rows = [
        (NAIC, "P-OK", "VS", VIN_OK, iso(-100), iso(265), "", ""),
        (NAIC, "P-OK", "VS", VIN_SHORT, iso(-100), iso(265), "", ""),
        (NAIC, "P-CANCEL", "VS", VIN_CANCELLED, iso(-100), iso(265), iso(-10), ""),
        (NAIC, "P-EXPIRED", "VS", VIN_EXPIRED, iso(-400), iso(-35), "", ""),
        (NAIC, "P-REVIEW", "VS", VIN_REVIEW, iso(-100), iso(265), "", "true"),
        (NAIC, "FLEET-1", "NS", "", iso(-100), iso(265), "", ""),
        (NAIC, "FLEET-OLD", "NS", "", iso(-400), iso(-35), "", ""),
        (OTHER_NAIC, "P-OTHER", "VS", VIN_NOWHERE, iso(-100), iso(265), "", ""),
    ]
    header = "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review"
    return "\n".join([header, *(",".join(r) for r in rows)]) + "\n"


def load_policies(database_url: str, folder: Path) -> None:
    """Load the standard test book, as ``olv policies import`` does."""
    path = folder / "policies.csv"
    path.write_text(policy_csv())
    load_policy_file(database_url, path)


def load_policy_file(database_url: str, path: Path) -> None:
    """Load a policy CSV with the import behind ``olv policies import``, in this process: the
    command itself is tested in tests/test_service_policy_import.py, and a process per load
    cost the suite about a minute. A file the import refuses fails the test."""
    from service.policy_import import import_files

    engine = db.open_database(database_url)
    try:
        import_files(engine, [path])
    finally:
        engine.dispose()


@contextmanager
def policy_store(database_url: str, folder: Path, csv_text: str) -> Iterator[SqlPolicyStore]:
    """The service's store over the policies of ``csv_text``, loaded as the import loads them."""
    path = folder / "policies.csv"
    path.write_text(csv_text)
    load_policy_file(database_url, path)
    with store_on(database_url) as store:
        yield store


@contextmanager
def store_on(database_url: str) -> Iterator[SqlPolicyStore]:
    """The service's store over the policies already in ``database_url``."""
    engine = db.make_engine(database_url)
    store = SqlPolicyStore(engine)
    try:
        yield store
    finally:
        store.close()
        engine.dispose()
