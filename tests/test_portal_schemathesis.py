"""Property-based tests of the JSON API from its own OpenAPI document (schemathesis): for
generated valid and invalid input, never a server error, and every answer — success or error
— matches the documented status codes, content types and schemas. Bounded to stay fast."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from olv import db
from olv.config import Settings
from portal.app import create_app
from portal.settings import PortalSettings
from tests.helpers import loopback
from tests.helpers.portal import add_registration, add_user, portal_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def portal_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    folder: Path = tmp_path_factory.mktemp("schemathesis")
    url = f"sqlite:///{folder / 'state.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    token = add_user(engine, "admin1", "admin")
    add_registration(engine, "ABC123", "ID", "1HGCM82633A004352")
    engine.dispose()
    # No insurer is registered: every vehicle ends in an (empty) broadcast, answered at once.
    env = {"OLV_DATABASE_URL": url, "OLV_PORTAL_TOKEN_RATE_PER_MINUTE": "1000000"}
    with portal_server(env, folder) as portal:
        yield portal.base, token


# The document the server serves at /openapi.json (a test below checks they are the same);
# built from the app here because schemathesis needs it when the tests are collected.
OPENAPI = create_app(Settings(database_url="sqlite://"), PortalSettings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_served_document_is_the_one_tested(portal_api: tuple[str, str]) -> None:
    base, _ = portal_api
    assert loopback.get(f"{base}/openapi.json", timeout=10).json() == OPENAPI


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, portal_api: tuple[str, str]) -> None:
    base, token = portal_api
    case.call_and_validate(
        base_url=base,
        headers={"Authorization": f"Bearer {token}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
        timeout=10,
    )
