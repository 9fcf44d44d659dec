"""Paper proof (``olv iies proof``) verified live with a real ``olv soap serve`` insurer, or by
an MVF when it cannot be asked, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from enforcement.case_settings import CaseSettings
from enforcement.models import Case as CaseRow
from enforcement.models import CoveragePeriod, Letter, MvfRequest
from enforcement.run import run
from olv import db
from olv.cli import run as olv_run
from tests.helpers.data import NAIC, VIN_CANCELLED, VIN_OK, policy_csv
from tests.helpers.iies_cases import activities, add_registrant, add_txn
from tests.helpers.portal import add_insurer, refusing_insurer
from tests.helpers.soap import soap_server, today

SETTINGS = CaseSettings()
TODAY = today().date()


@pytest.fixture(scope="module")
def insurer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real insurer service on its own policy store; its 00200809 endpoint."""
    folder = tmp_path_factory.mktemp("insurer")
    env = {**os.environ, "OLV_DATABASE_URL": f"sqlite:///{folder / 'insurer.db'}"}
    (folder / "policies.csv").write_text(policy_csv())
    for args in (["db", "upgrade"], ["policies", "import", str(folder / "policies.csv")]):
        subprocess.run([sys.executable, "-m", "olv", *args], env=env, check=True)
    with soap_server(env, folder) as server:
        yield server.url("/iicmva/00200809")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = db.make_engine(db_url)
    yield engine
    engine.dispose()


def proof(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    code = olv_run(["iies", "proof", *args])
    captured = capsys.readouterr()
    out = captured.out
    if code not in (0, 1, 2) or (code == 1 and not captured.err.startswith("error: no ")):
        print(captured.err)
    return code, (json.loads(out) if out.strip() else {})


def lapse_with_letter(engine: Engine, plate: str, vin: str) -> int:
    """A registration whose other insurer cancelled 20 days ago and that has its letter."""
    reg = add_registrant(engine, plate, vin)
    add_txn(engine, reg, "XLC", "99999", TODAY - timedelta(days=20))
    run(engine, TODAY - timedelta(days=20), SETTINGS)
    run(engine, TODAY - timedelta(days=10), SETTINGS)
    return reg


def test_confirmed_live_posts_the_proof_and_closes_the_case(
    engine: Engine, insurer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_insurer(engine, NAIC, insurer)
    reg = lapse_with_letter(engine, "OK1", VIN_OK)
    code, out = proof(capsys, "--plate", "ok1", "--state", "ny", "--naic", NAIC, "--policy", "P-OK")
    assert code == 0, out
    assert out["live"] == "Confirmed" and out["outcome"] == "posted"
    assert out["case_state"] == "CLC" and out["tracking_number"] is None
    with db.transaction(engine) as session:
        case = session.scalars(select(CaseRow)).one()
        assert (case.close_activity, case.lapse_days) == ("IPA", 20)
        period = session.scalars(select(CoveragePeriod)).one()
        assert (period.source, period.naic, period.starts) == ("live", NAIC, TODAY)
        mvf = session.scalars(select(MvfRequest)).one()
        assert (mvf.live_status, mvf.answer) == ("Confirmed", "NBS")
    assert [a[0] for a in activities(engine, reg)] == ["XLC", "LTF", "IPA"]
    # Nothing left for the run: the case is closed and stays closed.
    assert run(engine, TODAY + timedelta(days=30), SETTINGS)["activities"] == 0


def test_confirmed_live_without_a_case_only_records_the_proof(
    engine: Engine, insurer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_insurer(engine, NAIC, insurer)
    reg = add_registrant(engine, "OK2", VIN_OK)
    code, out = proof(capsys, "--plate", "OK2", "--state", "NY", "--naic", NAIC, "--policy", "P-OK")
    assert code == 0 and out["outcome"] == "posted" and out["case_state"] == "NOC"
    assert [a[0] for a in activities(engine, reg)] == ["IPA"]


def test_unconfirmed_live_counts_as_nis_and_suspends(
    engine: Engine, insurer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_insurer(engine, NAIC, insurer)
    reg = add_registrant(engine, "CX1", VIN_CANCELLED)
    code, out = proof(
        capsys, "--plate", "CX1", "--state", "NY", "--naic", NAIC, "--policy", "P-CANCEL"
    )
    assert code == 0 and out["live"] == "Unconfirmed" and out["outcome"] == "nis"
    assert out["case_state"] == "IRS" and out["suspensions"] == 1
    assert [(a[0], a[2]) for a in activities(engine, reg)] == [
        ("IPA", "NEW"),
        ("NIS", "NEW"),
        ("RSN", "IRS"),
    ]
    with db.transaction(engine) as session:
        assert session.scalars(select(Letter.type)).one() == "RSN"


def test_unavailable_insurer_falls_back_to_an_mvf_answered_by_nbs(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with refusing_insurer() as refused:  # held for the whole test: refused throughout
        add_insurer(engine, "20002", refused)
        reg = add_registrant(engine, "MV1", VIN_OK)
        code, out = proof(
            capsys, "--plate", "MV1", "--state", "NY", "--naic", "20002", "--policy", "K9"
        )
        assert code == 0 and out["live"] == "unavailable" and out["outcome"] == "mvf"
        tracking = out["tracking_number"]
        assert isinstance(tracking, str) and out["case_state"] == "SMV"
        with db.transaction(engine) as session:
            mvf = session.scalars(select(MvfRequest)).one()
            assert (mvf.naic, mvf.policy_number, mvf.due_on) == (
                "20002",
                "K9",
                TODAY + timedelta(14),
            )
        add_txn(engine, reg, "NBS", "20002", TODAY, tracking=tracking)
        summary = run(engine, TODAY + timedelta(days=2), SETTINGS)
        assert summary["mvf_answered"] == 1 and summary["cases_closed"] == 1
        with db.transaction(engine) as session:
            assert session.scalars(select(CaseRow.case_state)).one() == "CLN"
            assert session.scalars(select(MvfRequest.answer)).one() == "NBS"


def test_no_service_mvf_unanswered_brings_niv_then_suspension(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = add_registrant(engine, "MV2", VIN_OK)
    code, out = proof(
        capsys, "--plate", "MV2", "--state", "NY", "--naic", "30003", "--policy", "K1"
    )
    assert code == 0 and out["live"] == "no_service" and out["case_state"] == "SMV"
    assert run(engine, TODAY + timedelta(days=13), SETTINGS)["letters"] == 0
    assert run(engine, TODAY + timedelta(days=14), SETTINGS)["letters"] == 1
    assert run(engine, TODAY + timedelta(days=44), SETTINGS)["suspensions"] == 1
    assert [a[0] for a in activities(engine, reg)] == ["IPA", "MVF", "LNI", "RSV"]


def test_nis_answer_to_the_mvf_suspends(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    reg = add_registrant(engine, "MV3", VIN_OK)
    _, out = proof(capsys, "--plate", "MV3", "--state", "NY", "--naic", "30003", "--policy", "K1")
    add_txn(engine, reg, "NIS", "30003", TODAY, tracking=str(out["tracking_number"]))
    assert run(engine, TODAY + timedelta(days=1), SETTINGS)["suspensions"] == 1
    assert sorted(a[0] for a in activities(engine, reg)) == ["IPA", "MVF", "NIS", "RSN"]


def test_bad_proof_input(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    add_registrant(engine, "OK3", VIN_OK)
    base = ["--state", "NY", "--naic", NAIC, "--policy", "P-OK"]
    assert proof(capsys, "--plate", "NOPE1", *base)[0] == 1  # no such registration
    assert proof(capsys, "--plate", "OK3", "--state", "NY", "--naic", "12", "--policy", "P")[0] == 2
    assert proof(capsys, "--plate", "OK3", *base, "--date", "yesterday")[0] == 2
    assert proof(capsys, "--plate", "", *base)[0] == 2


def test_mvf_goes_to_the_insurer_outbox_once_and_leaves_the_list_when_answered(
    engine: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from enforcement import mvf_outbox

    reg = add_registrant(engine, "MV4", VIN_OK)
    _, out = proof(capsys, "--plate", "MV4", "--state", "NY", "--naic", "30003", "--policy", "K7")
    tracking = str(out["tracking_number"])
    assert olv_run(["iies", "mvf", "--naic", "30003"]) == 0
    (listed,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert listed["tracking_number"] == tracking and listed["vin"] == VIN_OK
    assert listed["policy_number"] == "K7" and "SMITH" not in json.dumps(listed)
    written = mvf_outbox.write_outbox(engine, "30003", tmp_path)
    assert written is not None and written.name.startswith("IIES-MVF 30003 ")
    assert tracking in written.read_text() and not list(tmp_path.glob(".*part"))
    assert mvf_outbox.write_outbox(engine, "30003", tmp_path) is None  # sent once
    add_txn(engine, reg, "NBS", "30003", TODAY, tracking=tracking)
    run(engine, TODAY, SETTINGS)
    assert olv_run(["iies", "mvf", "--naic", "30003"]) == 0
    assert capsys.readouterr().out == ""
    assert olv_run(["iies", "mvf", "--naic", "3"]) == 2
