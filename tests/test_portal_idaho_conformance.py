"""What Idaho's insurers really send, and the small things from its guide, end to end: a real
``olv portal serve`` asking a real ``olv soap serve`` through real HTTP proxies that rewrite its
answers, pages read by a signed-in browser client, mail to a real SMTP server, and the ``olv``
commands an operator runs."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyotp
import pytest
from sqlalchemy import insert, select

from olv import db
from olv.bob import layout
from portal.models import InsurerCall
from portal.web.compliance_data import latest_due_day
from tests.helpers import loopback, prewarmed
from tests.helpers.olv_cli import olv_here
from tests.helpers.portal import (
    PASSWORD,
    add_insurer,
    add_user,
    answer,
    canned_insurer,
    portal_server,
    write_bob,
)
from tests.helpers.rewriting_proxy import RewritingProxy, after_confirmed, rewriting_proxy
from tests.helpers.smtp_capture import SmtpCapture, smtp_server
from tests.helpers.soap import (
    codes_of,
    envelope,
    post,
    request_xml,
    response_element,
    soap_server,
    today,
)

pytestmark = pytest.mark.slow

V0510, V0809 = "00200510", "00200809"
STORED_KEY = "ABC-123"  # as the insurer keeps it; asked as ABC123
SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}
# NAIC → (version, proxy) of the insurers the portal asks; each has one policy STORED_KEY.
ASKED = {
    "10001": (V0809, "zero"),
    "10002": (V0510, "zero"),
    "10003": (V0809, "empty"),
    "10004": (V0510, "empty"),
    "10005": (V0809, "double_zero"),
    "10006": (V0510, "zero_and_more"),
}
SYSU_NAIC = "10007"  # answers Unconfirmed SYSU
QUIET_NAIC = "10009"  # never asked: its compliance numbers come from rows the test writes
REPORT_NAICS = ("10011", "10012")  # one BoB file carries both


def vin_of(naic: str) -> str:
    return f"IDAHO{naic}0000000"[:17]


def olv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return prewarmed.run(args, {**os.environ, **env}, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def insurer_policies() -> str:
    d = today().date()
    start, end = (d - timedelta(days=100)).isoformat(), (d + timedelta(days=265)).isoformat()
    header = "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review"
    rows = [f"{naic},{STORED_KEY},VS,{vin_of(naic)},{start},{end},," for naic in ASKED]
    return "\n".join([header, *rows]) + "\n"


@dataclass
class World:
    base: str
    env: dict[str, str]
    url: str
    tokens: dict[str, str]
    proxies: dict[str, RewritingProxy]
    soap: str
    smtp: SmtpCapture
    yesterday: datetime

    def verify(self, body: dict) -> dict:
        response = loopback.post(
            f"{self.base}/api/v1/verify",
            json=body,
            headers={"Authorization": f"Bearer {self.tokens['officer']}"},
            timeout=15,
        )
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def world(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("idaho")
    insurer_env = {"OLV_DATABASE_URL": f"sqlite:///{folder / 'insurer.db'}"}
    olv_here(insurer_env, "db", "upgrade")
    policies = folder / "policies.csv"
    policies.write_text(insurer_policies())
    olv_here(insurer_env, "policies", "import", str(policies))
    edits = {
        "zero": after_confirmed(b"<UnconfirmedReasonCode>0</UnconfirmedReasonCode>"),
        "empty": after_confirmed(b"<UnconfirmedReasonCode></UnconfirmedReasonCode>"),
        "double_zero": after_confirmed(b"<UnconfirmedReasonCode>00</UnconfirmedReasonCode>"),
        "zero_and_more": after_confirmed(
            b"<UnconfirmedReasonCode>0</UnconfirmedReasonCode><Remark>fine</Remark>"
        ),
    }
    sysu = answer(V0809, "Unconfirmed", ("SYSU",), naic=SYSU_NAIC)
    yesterday = datetime.combine(today().date() - timedelta(days=1), datetime.min.time(), UTC)
    day = yesterday.date()
    windows = (
        f"{QUIET_NAIC}@{day.isoformat()}T06:00/{day.isoformat()}T08:00;"
        f"*@{day.strftime('%a')} 20:00-21:00"
    )
    with (
        soap_server(insurer_env, folder) as soap,
        rewriting_proxy(soap.base, edits["zero"]) as zero,
        rewriting_proxy(soap.base, edits["empty"]) as empty,
        rewriting_proxy(soap.base, edits["double_zero"]) as double_zero,
        rewriting_proxy(soap.base, edits["zero_and_more"]) as zero_and_more,
        canned_insurer(200, sysu) as sysu_url,
        smtp_server() as smtp,
    ):
        proxies = {
            "zero": zero,
            "empty": empty,
            "double_zero": double_zero,
            "zero_and_more": zero_and_more,
        }
        engine = db.make_engine(module_db_url)
        for naic, (version, proxy) in ASKED.items():
            add_insurer(engine, naic, proxies[proxy].url(f"/iicmva/{version}"), version)
        add_insurer(engine, SYSU_NAIC, sysu_url)
        add_insurer(engine, QUIET_NAIC, "http://127.0.0.1:9/never")
        rows = [(naic, STORED_KEY, vin_of(naic)) for naic in [*ASKED, SYSU_NAIC]]
        env = {"OLV_DATABASE_URL": module_db_url}
        olv_here(env, "bob", "load", str(write_bob(folder / "State 20261101.txt", rows)))
        tokens = {"officer": add_user(engine, "officer1", "officer")}
        add_user(engine, "admin1", "admin")
        add_user(engine, "liaison1", "insurer", "10001")
        add_user(engine, "liaison11", "insurer", REPORT_NAICS[0])
        engine.dispose()
        env |= {
            "OLV_SMTP_HOST": smtp.host,
            "OLV_SMTP_PORT": str(smtp.port),
            "OLV_SMTP_TLS": "none",
            "OLV_SMTP_FROM": "olv@state.example",
            "OLV_PORTAL_MAINTENANCE_WINDOWS": windows,
            "OLV_PORTAL_UPLOAD_DIR": str(folder / "uploads"),
        }
        env.pop("OLV_PORTAL_BOB_DEADLINE_DAY", None)
        with portal_server(env, folder) as portal:
            yield World(
                portal.base, env, module_db_url, tokens, proxies, soap.base, smtp, yesterday
            )


@contextmanager
def signed_in(world: World, username: str) -> Iterator[httpx.Client]:
    """A browser-like client signed in (password, then enrolling the second factor)."""
    with httpx.Client(
        verify=loopback.TLS, base_url=world.base, timeout=15, follow_redirects=False
    ) as client:
        _sign_in(client, username)
        yield client


def _sign_in(client: httpx.Client, username: str) -> None:
    response = client.post(
        "/login", data={"username": username, "password": PASSWORD}, headers=SAME_ORIGIN
    )
    assert response.status_code == 303 and response.headers["location"] == "/login/enrol"
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', client.get("/login/enrol").text)
    assert secret, "no TOTP secret on the enrolment page"
    code = pyotp.TOTP(secret.group(1)).now()
    done = client.post("/login/enrol", data={"code": code}, headers=SAME_ORIGIN)
    assert done.status_code == 303, done.text


@pytest.fixture(scope="module")
def admin(world: World) -> Iterator[httpx.Client]:
    with signed_in(world, "admin1") as client:
        yield client


def call_outcomes(world: World, naics: list[str]) -> dict[str, str]:
    """The logged outcome of the calls to these insurers (the log is written in batches)."""
    engine = db.make_engine(world.url)
    deadline = time.monotonic() + 10
    outcomes: dict[str, str] = {}
    try:
        while time.monotonic() < deadline and len(outcomes) < len(naics):
            with engine.connect() as conn:
                rows = conn.execute(
                    select(InsurerCall.naic, InsurerCall.outcome).where(InsurerCall.naic.in_(naics))
                )
                outcomes = dict(rows.tuples().all())
            time.sleep(0.1)
    finally:
        engine.dispose()
    return outcomes


# --- SPEC §5 step 5: what Idaho's insurers send ---------------------------------------------


@pytest.mark.parametrize("naic", ["10001", "10002", "10003", "10004"])
def test_confirmed_with_an_empty_or_zero_reason_code_is_confirmed(world: World, naic: str) -> None:
    version, proxy = ASKED[naic]
    before = world.proxies[proxy].edits
    result = world.verify({"vin": vin_of(naic)})
    assert world.proxies[proxy].edits > before, "the proxy did not add the reason code"
    assert (result["status"], result["verdict"], result["naic"]) == ("Confirmed", "confirmed", naic)
    assert result["reasons"] == [] and result["source"] == "insurer"


@pytest.mark.parametrize("naic", ["10005", "10006"])
def test_other_schema_faults_still_make_the_insurer_unavailable(world: World, naic: str) -> None:
    version, proxy = ASKED[naic]
    before = world.proxies[proxy].edits
    result = world.verify({"vin": vin_of(naic)})
    assert world.proxies[proxy].edits > before
    assert (result["status"], result["verdict"]) == ("Unconfirmed", "unable_to_verify")
    assert [r["code"] for r in result["reasons"]] == ["SYSU"]
    assert result["book_of_business"]["policy_number"] == STORED_KEY
    assert call_outcomes(world, [naic]) == {naic: "invalid"}


def _sent_keys(proxy: RewritingProxy, tag: str) -> list[str]:
    return [
        m.decode()
        for body in proxy.requests
        for m in re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), body)
    ]


def test_a_typed_policy_number_leaves_without_punctuation_and_is_shown_as_asked(
    world: World,
) -> None:
    result = world.verify({"vin": vin_of("10001"), "naic": "10001", "policy_number": "abc-12 3"})
    assert result["verdict"] == "confirmed" and result["policy_number"] == "abc-12 3"
    assert _sent_keys(world.proxies["zero"], "PolicyKey")[-1] == "ABC123"


def test_a_policy_number_from_the_book_of_business_leaves_without_punctuation(
    world: World,
) -> None:
    result = world.verify({"vin": vin_of("10002")})  # the 00200510 insurer: UniqueKey
    assert result["verdict"] == "confirmed" and result["policy_number"] == STORED_KEY
    assert _sent_keys(world.proxies["zero"], "UniqueKey")[-1] == "ABC123"


def test_a_policy_number_without_letters_or_digits_is_refused(world: World) -> None:
    response = loopback.post(
        f"{world.base}/api/v1/verify",
        json={"vin": vin_of("10001"), "naic": "10001", "policy_number": "- -"},
        headers={"Authorization": f"Bearer {world.tokens['officer']}"},
        timeout=15,
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["policy_number"]


@pytest.mark.parametrize("version", [V0510, V0809])
def test_the_insurer_service_matches_a_stored_punctuated_key_to_a_plain_one(
    world: World, version: str
) -> None:
    body = request_xml(version, naic="10001", key="ABC123", vin=vin_of("10001"))
    reply = post(f"{world.soap}/iicmva/{version}", envelope(body))
    assert codes_of(response_element(reply)) == ("Confirmed", [])


def test_an_insurer_answering_sysu_is_unavailable_and_logged_so(world: World) -> None:
    result = world.verify({"vin": vin_of(SYSU_NAIC)})
    assert (result["verdict"], [r["code"] for r in result["reasons"]]) == (
        "unable_to_verify",
        ["SYSU"],
    )
    assert call_outcomes(world, [SYSU_NAIC]) == {SYSU_NAIC: "unavailable"}


# --- pages: dates, the due day, maintenance windows -------------------------------------------


@pytest.mark.parametrize("path", ["/history.json", "/history.csv", "/compliance.json"])
@pytest.mark.parametrize(
    ("name", "value"), [("until", "9999-12-31"), ("since", "0001-01-01"), ("until", "1899-12-31")]
)
def test_out_of_range_dates_are_invalid_input_naming_the_field(
    admin: httpx.Client, path: str, name: str, value: str
) -> None:
    response = admin.get(path, params={name: value}, headers={"Accept": "application/json"})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [name]


def test_the_book_of_business_is_due_by_the_10th_by_default(
    world: World, admin: httpx.Client
) -> None:
    assert "OLV_PORTAL_BOB_DEADLINE_DAY" not in world.env
    data = admin.get("/compliance.json").json()
    due = latest_due_day(datetime.now(UTC).date(), 10)
    assert data["bob_due"] == due.isoformat() and due.day == 10


def test_planned_maintenance_is_not_counted_as_unavailability(
    world: World, admin: httpx.Client
) -> None:
    at = world.yesterday

    def call(hour: float, outcome: str) -> dict:
        return {
            "at": at + timedelta(hours=hour),
            "naic": QUIET_NAIC,
            "outcome": outcome,
            "latency_ms": 5000.0 if outcome == "timeout" else 80.0,
        }

    rows = [
        call(6.5, "timeout"),  # in its dated window
        call(7.0, "unavailable"),  # in its dated window
        call(7.5, "ok"),  # in the window but answered: counted
        call(20.5, "refused"),  # in the weekly window of every insurer
        call(9.0, "timeout"),  # outside: counted
        call(21.0, "refused"),  # the window's end is not in it: counted
    ]
    engine = db.make_engine(world.url)
    with engine.begin() as conn:
        conn.execute(insert(InsurerCall), rows)
    engine.dispose()
    day = at.date().isoformat()
    data = admin.get("/compliance.json", params={"since": day, "until": day}).json()
    (quiet,) = [i for i in data["insurers"] if i["naic"] == QUIET_NAIC]
    (stats,) = quiet["days"]
    assert (stats["calls"], stats["unavailable"], stats["over_5s"]) == (3, 2, 1)


# --- book of business: header record, web-upload mail, contacts, per-NAIC reports -------------


def _record(naic: str, number: str, vin: str) -> str:
    values = {"policy_type": "VS", "naic": naic, "policy_number": number}
    return layout.format_record({**values, "effective_date": "20240101", "vin": vin})


def _bob_file(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(line + "\r\n" for line in lines).encode("ascii"))
    return path


HEADER = "HD" + "ACME INSURANCE 20261101".ljust(layout.RECORD_LENGTH - 2)


def test_a_file_with_a_header_record_is_loaded_without_errors(world: World, tmp_path: Path) -> None:
    records = [_record("10021", f"H-{i}", f"1HGCM82633A{i:06d}") for i in range(3)]
    trailer = layout.format_trailer(3, "20261101")
    path = _bob_file(tmp_path / "Header 20261101.txt", [HEADER, *records, trailer])
    result = olv(world.env, "bob", "load", str(path), "--report-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert ": accepted; 3 records loaded, 0 errors," in result.stdout  # warnings: check digits


def test_contacts_are_listed_and_removed(world: World) -> None:
    for email in ("a@ins.example", "b@ins.example"):
        ok(olv(world.env, "bob", "contacts", "add", "--naic", "10031", "--email", email))
    ok(olv(world.env, "bob", "contacts", "remove", "--naic", "10031", "--email", "a@ins.example"))
    listed = ok(olv(world.env, "bob", "contacts", "list", "--naic", "10031"))
    assert [line for line in listed.splitlines() if line] == [
        '{"naic": "10031", "name": null, "email": "b@ins.example"}'
    ]
    again = olv(
        world.env, "bob", "contacts", "remove", "--naic", "10031", "--email", "a@ins.example"
    )
    assert again.returncode == 1 and "no contact" in again.stderr
    assert "Traceback" not in again.stderr


def test_a_web_upload_sends_the_same_summary_mail_as_an_sftp_delivery(
    world: World, tmp_path: Path
) -> None:
    ok(olv(world.env, "bob", "contacts", "add", "--naic", "10001", "--email", "bob@ins.example"))
    good = [_record("10001", STORED_KEY, vin_of("10001"))]
    good += [_record("10001", f"W-{i}", f"1HGCM82633B{i:06d}") for i in range(40)]
    bad = _record("10001", "W-BAD", "NOT-A-VIN")
    content = "".join(line + "\r\n" for line in [HEADER, *good, bad]).encode()
    before = len(world.smtp.received)
    with signed_in(world, "liaison1") as liaison:
        response = liaison.post(
            "/bob/upload",
            files={"file": ("Web 20261101.txt", content, "text/plain")},
            headers={**SAME_ORIGIN, "Accept": "application/json"},
        )
    assert response.status_code == 200, response.text
    (mail,) = world.smtp.wait_for(before + 1)[before:]
    assert mail.rcpt_tos == ["bob@ins.example"]
    message = mail.message
    assert message["Subject"] == "OLV book of business: Web 20261101.txt: accepted (web:liaison1)"
    text = message.get_content()
    assert "Records:   41" in text and "Errors:    1" in text and "NAIC(s):   10001" in text
    assert "NOT-A-VIN" not in text  # never a record's content in a mail


def test_a_liaison_sees_only_their_naics_lines_of_a_shared_file(
    world: World, admin: httpx.Client, tmp_path: Path
) -> None:
    mine, theirs = REPORT_NAICS
    lines = []
    for naic in REPORT_NAICS:
        lines += [_record(naic, f"R-{naic}-{i}", f"1HGCM82633C{i:06d}") for i in range(40)]
        lines.append(_record(naic, f"R-{naic}-BAD", f"BAD-VIN-OF-{naic}"))
    path = _bob_file(tmp_path / "Shared 20261101.txt", lines)
    ok(olv(world.env, "bob", "load", str(path), "--report-dir", str(tmp_path)))
    files = admin.get("/bob.json").json()["files"]
    (file_id,) = [f["id"] for f in files if f["name"] == path.name]
    full = admin.get(f"/bob/files/{file_id}/report.txt").text
    assert f"BAD-VIN-OF-{mine}" in full and f"BAD-VIN-OF-{theirs}" in full
    with signed_in(world, f"liaison{mine[-2:]}") as liaison:
        report = liaison.get(f"/bob/files/{file_id}/report.txt")
    assert report.status_code == 200
    assert f"BAD-VIN-OF-{mine}" in report.text and f"line {41}:" in report.text
    assert f"BAD-VIN-OF-{theirs}" not in report.text and f"R-{theirs}" not in report.text
    assert f"line {82}:" not in report.text
