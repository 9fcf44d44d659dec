"""The JSON API end to end: a real ``olv portal serve`` asking real ``olv soap serve`` insurers
(00200809 and 00200510), one behind TLS that demands a client certificate, and insurers that
hang, refuse or answer garbage. Set up with the ``olv`` commands an operator would run."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from olv import db
from portal.models import InsurerCall
from tests.helpers import loopback, prewarmed
from tests.helpers.data import NAIC, OTHER_NAIC, VIN_NOWHERE, VIN_OK, VIN_SHORT, policy_csv
from tests.helpers.olv_cli import olv_here
from tests.helpers.portal import (
    add_insurer,
    add_user,
    canned_insurer,
    hung_insurer,
    portal_server,
    refusing_insurer,
    write_bob,
)
from tests.helpers.soap import soap_server, today
from tests.helpers.tls_proxy import make_certificates, tls_proxy

pytestmark = pytest.mark.slow

B_NAIC = "20002"  # the 00200510 insurer
VIN_B = "2T1BURHE0JC014706"
VIN_HUNG = "HUNG0000000000001"
VIN_REFUSED = "REFUSED0000000001"
VIN_GARBAGE = "GARBAGE0000000001"
VIN_NOCERT = "NOCERT00000000001"
PASSWORD = "Officer-Duty-Long-7"


def olv(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return prewarmed.run(args, {**os.environ, **env}, stdin=stdin, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def b_policies() -> str:
    d = today().date()
    start, end = (d - timedelta(days=100)).isoformat(), (d + timedelta(days=265)).isoformat()
    header = "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review"
    return f"{header}\n{B_NAIC},B-1,VS,{VIN_B},{start},{end},,\n"


@pytest.fixture(scope="module")
def insurers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Every insurer the state will register, by role; yields their URLs and the TLS files."""
    folder = tmp_path_factory.mktemp("insurers")
    env_a = {"OLV_DATABASE_URL": f"sqlite:///{folder / 'a.db'}"}
    env_b = {"OLV_DATABASE_URL": f"sqlite:///{folder / 'b.db'}"}
    for env, csv in ((env_a, policy_csv()), (env_b, b_policies())):
        name = Path(env["OLV_DATABASE_URL"].removeprefix("sqlite:///")).with_suffix(".csv")
        name.write_text(csv)
        olv_here(env, "db", "upgrade")
        olv_here(env, "policies", "import", str(name))
    ca, tls = make_certificates(folder)
    with (
        soap_server(env_a, folder) as a,
        soap_server(env_b, folder) as b,
        hung_insurer() as hung,
        refusing_insurer() as refused,
        canned_insurer(200, b"<html>busy</html>") as garbage,
        canned_insurer(200, b"<x>" + b"A" * (2 * 1024 * 1024) + b"</x>") as huge,
        tls_proxy(ca, "127.0.0.1", int(a.base.rsplit(":", 1)[1])) as tls_port,
    ):
        yield {
            "a": a.url("/iicmva/00200809"),
            "b": b.url("/iicmva/00200510"),
            "hung": hung,
            "refused": refused,
            "garbage": garbage,
            "huge": huge,
            "tls": f"https://127.0.0.1:{tls_port}/iicmva/00200809",
            "ca": str(tls.ca),
            "client_cert": str(tls.client_cert),
            "client_key": str(tls.client_key),
        }


@dataclass
class State:
    base: str
    env: dict[str, str]
    tokens: dict[str, str]
    url: str
    doomed_ca: Path

    def post(
        self, path: str, body: dict, role: str | None = "officer", timeout: float = 10
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return loopback.post(f"{self.base}{path}", json=body, headers=headers, timeout=timeout)

    def verify(self, body: dict, role: str = "officer") -> dict:
        response = self.post("/api/v1/verify", body, role)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def state(
    module_db_url: str, insurers: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[State]:
    folder = tmp_path_factory.mktemp("state")
    env = {"OLV_DATABASE_URL": module_db_url}

    def add(naic: str, url: str, version: str = "00200809", *extra: str) -> None:
        olv_here(
            env,
            "insurers",
            "add",
            "--naic",
            naic,
            "--name",
            f"Insurer {naic}",
            "--url",
            url,
            "--version",
            version,
            *extra,
        )

    add(NAIC, insurers["a"], "00200809", "--accepts-unknown")
    add(B_NAIC, insurers["b"], "00200510", "--accepts-unknown")
    tls = ("--ca-bundle", insurers["ca"])
    cert = ("--client-cert", insurers["client_cert"], "--client-key", insurers["client_key"])
    add(OTHER_NAIC, insurers["tls"], "00200809", *tls, *cert)
    engine = db.make_engine(module_db_url)  # the rest without a process each, to save time
    add_insurer(engine, "30003", insurers["hung"])
    add_insurer(engine, "40004", insurers["refused"])
    add_insurer(engine, "50005", insurers["garbage"])
    add_insurer(engine, "80008", insurers["huge"])
    # Same TLS proxy, no client certificate: the handshake is refused.
    add_insurer(engine, "60006", insurers["tls"], ca_bundle=insurers["ca"])
    doomed_ca = folder / "ca-copy.pem"  # removed by a test after registration
    doomed_ca.write_bytes(Path(insurers["ca"]).read_bytes())
    add_insurer(engine, "70007", insurers["tls"], ca_bundle=str(doomed_ca))
    bob = write_bob(
        folder / "State 20261101.txt",
        [
            (NAIC, "P-OK", VIN_OK),
            (B_NAIC, "B-1", VIN_B),
            ("30003", "H-1", VIN_HUNG),
            ("40004", "R-1", VIN_REFUSED),
            ("50005", "G-1", VIN_GARBAGE),
            (OTHER_NAIC, "P-OTHER", VIN_NOWHERE),
            ("60006", "N-1", VIN_NOCERT),
        ],
    )
    olv_here(env, "bob", "load", str(bob), "--report-dir", str(folder))
    plates = folder / "registrations.csv"
    plates.write_text(f"plate,state,vin\nOLV 1,ID,{VIN_OK}\n")
    olv_here(env, "registrations", "import", str(plates))
    olv_here(env, "users", "add", "officer1", "--role", "officer", stdin=PASSWORD + "\n")
    tokens = {"officer": olv_here(env, "tokens", "create", "officer1").splitlines()[-1]}
    tokens["dmv"] = add_user(engine, "dmv1", "dmv")
    tokens["insurer"] = add_user(engine, "liaison1", "insurer", NAIC)
    tokens["admin"] = add_user(engine, "admin1", "admin")
    engine.dispose()
    with portal_server(env, folder) as portal:
        yield State(portal.base, env, tokens, module_db_url, doomed_ca)


def test_confirmed_by_plate_through_a_00200809_insurer(state: State) -> None:
    result = state.verify({"plate": "olv1"})
    assert (result["status"], result["verdict"], result["source"]) == (
        "Confirmed",
        "confirmed",
        "insurer",
    )
    assert (result["naic"], result["policy_number"], result["vin"]) == (NAIC, "P-OK", VIN_OK)
    assert result["elapsed_ms"] < 5000 and len(result["query_id"]) == 32


def test_00200510_insurer_confirms_and_numbers_become_names(state: State) -> None:
    assert state.verify({"vin": VIN_B})["verdict"] == "confirmed"
    # Key not found, VIN on another of its policies and covered: VIN3, sent as 10.
    result = state.verify({"vin": VIN_B, "naic": B_NAIC, "policy_number": "NOPE-1"})
    assert result["verdict"] == "unconfirmed"
    assert [(r["code"], r["number"]) for r in result["reasons"]] == [("VIN3", "10")]


def test_vehicle_without_bob_record_confirmed_by_broadcast(state: State) -> None:
    result = state.verify({"vin": VIN_SHORT})
    assert (result["verdict"], result["source"], result["naic"]) == ("confirmed", "broadcast", NAIC)


def test_insurer_behind_tls_with_client_certificate(state: State) -> None:
    result = state.verify({"vin": VIN_NOWHERE})
    assert (result["verdict"], result["naic"]) == ("confirmed", OTHER_NAIC)
    refused = state.verify({"vin": VIN_NOCERT})  # same proxy, no client certificate
    assert refused["verdict"] == "unable_to_verify"
    assert refused["book_of_business"]["policy_number"] == "N-1"
    # Under TLS 1.3 the server refuses the certificate after the client's side of the
    # handshake is done: the client may see only the connection closed.
    assert call_outcomes(state, ["60006"])["60006"] in ("tls", "refused")


BUDGET = 5.0  # OLV_PORTAL_BUDGET_SECONDS's default: one budget per query, from receipt


def test_hung_refusing_and_garbage_insurers_do_not_slow_a_healthy_one(state: State) -> None:
    """Timed against the same run's own floor, not a wall-clock figure a busy machine can
    exceed: the refused and garbage insurers answer at once, so their calls measure what the
    portal and the client cost around an insurer; the hung call may take that plus the budget.
    A healthy query must be answered while the hung one is still in flight."""

    def timed(vin: str) -> tuple[dict, float]:
        started = time.monotonic()
        answer = state.verify({"vin": vin})
        return answer, time.monotonic() - started

    bad = [VIN_HUNG, VIN_REFUSED, VIN_GARBAGE]
    with ThreadPoolExecutor(len(bad)) as pool:
        futures = {vin: pool.submit(timed, vin) for vin in bad}
        time.sleep(0.3)  # the hung call is in flight now
        healthy, healthy_seconds = timed(VIN_OK)
        hung_in_flight = not futures[VIN_HUNG].done()
        results = {vin: future.result() for vin, future in futures.items()}
    answers = {vin: answer for vin, (answer, _) in results.items()}
    assert healthy["verdict"] == "confirmed"
    # Held up behind the hung insurer, the healthy answer would come after the budget.
    assert hung_in_flight, f"a hung insurer slowed a healthy one ({healthy_seconds:.2f} s)"
    assert healthy_seconds < BUDGET / 2, f"a healthy answer took {healthy_seconds:.2f} s"
    # The budget runs from receipt (elapsed_ms); the client adds its own connection set-up,
    # which the calls answered at once measure.
    assert answers[VIN_HUNG]["elapsed_ms"] <= BUDGET * 1000
    floor = max(results[VIN_REFUSED][1], results[VIN_GARBAGE][1])
    hung_seconds = results[VIN_HUNG][1]
    assert hung_seconds < BUDGET + floor + 0.5, f"{hung_seconds:.2f} s (floor {floor:.2f} s)"
    assert hung_seconds > BUDGET - 1, "the hung insurer was not waited for: not a real hang"
    for vin, answer in answers.items():
        assert answer["verdict"] == "unable_to_verify", vin
        assert answer["reasons"][0]["code"] == "SYSU"
        assert answer["source"] == "book_of_business"
        assert answer["book_of_business"]["policy_number"]
    outcomes = call_outcomes(state, ["30003", "40004", "50005"])
    assert outcomes == {"30003": "timeout", "40004": "refused", "50005": "invalid"}


def call_outcomes(state: State, naics: list[str]) -> dict[str, str]:
    """The logged outcome of the calls to these insurers (the log is written in batches)."""
    engine = db.make_engine(state.url)
    deadline = time.monotonic() + 5
    outcomes: dict[str, str] = {}
    while time.monotonic() < deadline and len(outcomes) < len(naics):
        with engine.connect() as conn:
            rows = conn.execute(
                select(InsurerCall.naic, InsurerCall.outcome).where(InsurerCall.naic.in_(naics))
            ).all()
        outcomes = dict(rows)
        time.sleep(0.2)
    engine.dispose()
    return outcomes


def test_roles_and_tokens(state: State) -> None:
    assert state.post("/api/v1/verify", {"vin": VIN_OK}, role=None).status_code == 401
    assert state.post("/api/v1/verify", {"vin": VIN_OK}, role="insurer").status_code == 403
    batch = {"items": [{"vin": VIN_OK}]}
    assert state.post("/api/v1/verify/batch", batch, role="officer").status_code == 403
    bogus = loopback.post(
        f"{state.base}/api/v1/verify",
        json={"vin": VIN_OK},
        headers={"Authorization": "Bearer olv_000000000000_" + "x" * 43},
    )
    assert bogus.status_code == 401 and bogus.json()["ok"] is False


def test_revoked_token_is_refused(state: State) -> None:
    created = ok(olv(state.env, "tokens", "create", "officer1", "--expires-days", "1"))
    token = created.splitlines()[-1]
    token_id = token.split("_")[1]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{state.base}/api/v1/verify"
    assert loopback.post(url, json={"vin": VIN_OK}, headers=headers, timeout=10).status_code == 200
    ok(olv(state.env, "tokens", "revoke", token_id))
    # A running portal re-checks a valid token at most every 2 seconds.
    deadline = time.monotonic() + 3
    while (
        status := loopback.post(url, json={"vin": VIN_OK}, headers=headers, timeout=10).status_code
    ) == 200:
        assert time.monotonic() < deadline, "the revoked token still works"
        time.sleep(0.2)
    assert status == 401


def test_batch_answers_in_order(state: State) -> None:
    items = [{"vin": VIN_B}, {"plate": "NO-SUCH"}, {"plate": "OLV1"}, {"vin": VIN_SHORT}]
    response = state.post("/api/v1/verify/batch", {"items": items}, role="dmv", timeout=20)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r.get("vin") for r in results] == [VIN_B, None, VIN_OK, VIN_SHORT]
    assert results[1]["status"] == 404
    assert [results[i]["verdict"] for i in (0, 2, 3)] == ["confirmed"] * 3


def test_onboarding_check_passes_for_good_insurers_of_both_versions(state: State) -> None:
    good = olv(state.env, "insurers", "check", NAIC, "--vin", VIN_OK, "--policy", "P-OK")
    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    names = [line.split(":")[0].split(None, 1)[1] for line in lines[:-1]]
    assert names == [
        "wsdl",
        "known vehicle",
        "unknown VIN",
        "wrong NAIC",
        "missing elements",
        "malformed date",
        "date out of window",
        "UNKNOWN key",
        "schema-valid answers",
        "response time",
    ]
    assert all(line.startswith("pass") for line in lines[:-1])
    old = olv(state.env, "insurers", "check", B_NAIC, "--vin", VIN_B, "--policy", "B-1")
    assert old.returncode == 0, old.stdout + old.stderr
    assert "pass  wrong NAIC: Unconfirmed 7 " in old.stdout  # numbers on the wire


def test_onboarding_check_fails_for_broken_insurers(state: State) -> None:
    garbage = olv(state.env, "insurers", "check", "50005")
    assert garbage.returncode == 1
    assert "FAIL  schema-valid answers" in garbage.stdout
    assert "FAIL  wsdl" in garbage.stdout
    refused = olv(state.env, "insurers", "check", "40004")
    assert refused.returncode == 1 and "refused" in refused.stdout
    unknown = olv(state.env, "insurers", "check", "99998")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: ")


def test_certificate_files_gone_after_registration_make_the_insurer_unavailable(
    state: State,
) -> None:
    state.doomed_ca.unlink()  # e.g. removed by a botched rotation; 70007 was never asked yet
    result = state.verify({"vin": VIN_OK, "naic": "70007", "policy_number": "X-1"})
    assert result["verdict"] == "unable_to_verify" and result["naic"] == "70007"


def test_an_endless_answer_is_cut_at_the_cap(state: State) -> None:
    result = state.verify({"vin": VIN_OK, "naic": "80008", "policy_number": "BIG-1"})
    assert (result["naic"], result["verdict"]) == ("80008", "unable_to_verify")
    engine = db.make_engine(state.url)
    deadline, outcomes = time.monotonic() + 5, []
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.2)  # the call log is written in batches
        with engine.connect() as conn:
            query = select(InsurerCall.outcome).where(InsurerCall.naic == "80008")
            outcomes = conn.execute(query).scalars().all()
    engine.dispose()
    assert outcomes == ["invalid"]
