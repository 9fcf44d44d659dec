"""The portal's commands (SPEC §3): insurers, registrations, users and tokens, run in-process
through ``olv.cli.run`` against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from olv import db
from olv.cli import run
from portal import passwords
from portal.models import ApiToken, Insurer, Registration, SecurityLog, User

GOOD_PASSWORD = "Sergeant-Pepper-1967"


def olv(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = run(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def cli(db_url: str, capsys, monkeypatch):
    def call(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return olv(capsys, monkeypatch, *args, stdin=stdin)

    return call


def rows(url: str, model: type) -> list:
    engine = db.make_engine(url)
    with db.session_factory(engine)() as session:
        found = list(session.scalars(select(model)))
    engine.dispose()
    return found


def test_insurers_add_updates_and_lists(cli, db_url: str) -> None:
    base = ["insurers", "add", "--naic", "12345", "--name", "Acme", "--version", "00200809"]
    code, out, _ = cli(*base, "--url", "http://a.example/iicmva/00200809")
    assert code == 0 and "added" in out
    code, out, _ = cli(
        *base, "--url", "http://b.example/iicmva/00200809", "--accepts-unknown", "--timeout", "2.5"
    )
    assert code == 0 and "updated" in out
    code, out, _ = cli("insurers", "list")
    listed = [json.loads(line) for line in out.splitlines()]
    assert listed == [
        {
            "naic": "12345",
            "name": "Acme",
            "url": "http://b.example/iicmva/00200809",
            "version": "00200809",
            "accepts_unknown": True,
            "client_cert": None,
            "client_key": None,
            "ca_bundle": None,
            "timeout": 2.5,
            "enabled": True,
        }
    ]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--naic", "1234"], "five digits"),
        (["--version", "00200707"], "--version"),
        (["--url", "ftp://x.example/"], "--url"),
        (["--client-cert", "/no/such.pem", "--url", "https://x.example/"], "--client-cert"),
        (["--timeout", "0"], "--timeout"),
    ],
)
def test_insurers_add_refuses_bad_input(cli, db_url: str, args: list[str], words: str) -> None:
    values = {
        "--naic": "12345",
        "--name": "Acme",
        "--url": "http://x.example/",
        "--version": "00200809",
    }
    for i in range(0, len(args), 2):
        values[args[i]] = args[i + 1]
    flat = [part for pair in values.items() for part in pair]
    code, out, err = cli("insurers", "add", *flat)
    assert code == 2 and err.startswith("error: ") and words in err and len(err.splitlines()) == 1
    assert rows(db_url, Insurer) == []


def test_registrations_import_upserts_and_reports_bad_rows(
    cli, db_url: str, tmp_path: Path
) -> None:
    first = tmp_path / "r1.csv"
    first.write_text("plate,state,vin\nabc 123,id,1hgcm82633a004352\nXYZ-9,WA,2T1BURHE0JC014706\n")
    code, out, _ = cli("registrations", "import", str(first))
    assert code == 0 and "2 registrations imported" in out
    second = tmp_path / "r2.csv"
    second.write_text("plate,state,vin\nABC123,ID,5YJSA1E26HF000337\nBAD,Idaho,X\n,ID,Y\n")
    code, out, err = cli("registrations", "import", str(second))
    assert code == 0 and "1 registrations imported, 2 rows skipped" in out
    assert "line 3: state" in err and "line 4: plate" in err
    found = {(r.plate, r.state): r.vin for r in rows(db_url, Registration)}
    assert found == {("ABC123", "ID"): "5YJSA1E26HF000337", ("XYZ9", "WA"): "2T1BURHE0JC014706"}


@pytest.mark.parametrize(
    "content",
    [b"vin,plate\nX,Y\n", b"\xff\xfep\x00l\x00", b""],
    ids=["wrong-header", "utf16", "empty"],
)
def test_registrations_import_refuses_unreadable_files(
    cli, db_url: str, tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "r.csv"
    path.write_bytes(content)
    code, _, err = cli("registrations", "import", str(path))
    assert code == 2 and err.startswith("error: ") and "nothing was imported" in err
    assert rows(db_url, Registration) == []


def test_users_add_hashes_the_password_from_stdin(cli, db_url: str) -> None:
    code, out, _ = cli("users", "add", "jdoe", "--role", "officer", stdin=GOOD_PASSWORD + "\n")
    assert code == 0, out
    [user] = rows(db_url, User)
    assert (user.username, user.role, user.naic, user.totp_enrolled) == (
        "jdoe",
        "officer",
        None,
        False,
    )
    assert user.password_hash.startswith("$argon2id$")
    assert GOOD_PASSWORD not in user.password_hash
    assert passwords.verify_password(user.password_hash, GOOD_PASSWORD)
    assert [e.event for e in rows(db_url, SecurityLog)] == ["user_added"]


@pytest.mark.parametrize(
    ("args", "stdin", "code", "words"),
    [
        (["x1", "--role", "officer"], "short-pass\n", 1, "at least 12"),
        (["x1", "--role", "officer"], "password1234\n", 1, "common passwords"),
        (["x1", "--role", "officer"], "", 2, "no password"),
        (["x1", "--role", "insurer"], GOOD_PASSWORD, 2, "--naic"),
        (["x1", "--role", "dmv", "--naic", "12345"], GOOD_PASSWORD, 2, "only for the insurer"),
        (["x1", "--role", "chief"], GOOD_PASSWORD, 2, "unknown role"),
        (["bad name", "--role", "officer"], GOOD_PASSWORD, 1, "user name"),
    ],
)
def test_users_add_refuses(cli, db_url: str, args, stdin, code, words) -> None:
    got, _, err = cli("users", "add", *args, stdin=stdin)
    assert got == code and err.startswith("error: ") and words in err
    assert rows(db_url, User) == []


def test_users_add_twice_is_refused(cli, db_url: str) -> None:
    assert cli("users", "add", "jdoe", "--role", "court", stdin=GOOD_PASSWORD)[0] == 0
    code, _, err = cli("users", "add", "jdoe", "--role", "court", stdin=GOOD_PASSWORD)
    assert code == 1 and "already exists" in err


def test_users_unlock_resets_the_lockout(cli, db_url: str) -> None:
    assert (
        cli("users", "add", "liaison", "--role", "insurer", "--naic", "12345", stdin=GOOD_PASSWORD)[
            0
        ]
        == 0
    )
    engine = db.make_engine(db_url)
    with db.transaction(engine) as session:
        user = session.scalar(select(User))
        user.failed_logins, user.locked_at = 5, user.created_at
    engine.dispose()
    code, out, _ = cli("users", "unlock", "liaison")
    assert code == 0
    [user] = rows(db_url, User)
    assert (user.failed_logins, user.locked_at, user.first_failed_at) == (0, None, None)
    assert cli("users", "unlock", "nobody")[0] == 1


def test_tokens_create_prints_the_token_last_and_stores_a_hash(cli, db_url: str) -> None:
    cli("users", "add", "dmv-system", "--role", "dmv", stdin=GOOD_PASSWORD)
    code, out, _ = cli("tokens", "create", "dmv-system", "--expires-days", "30")
    assert code == 0
    token = out.splitlines()[-1]
    assert token.startswith("olv_") and len(token) > 40
    [row] = rows(db_url, ApiToken)
    assert token not in row.token_hash and row.token_hash != token
    assert token.split("_")[1] == row.id
    assert (row.expires_at - row.created_at).days == 30
    code, out, _ = cli("tokens", "revoke", row.id)
    assert code == 0
    assert rows(db_url, ApiToken)[0].revoked_at is not None
    assert cli("tokens", "revoke", "000000000000")[0] == 1
    assert cli("tokens", "create", "nobody")[0] == 1
    events = [e.event for e in rows(db_url, SecurityLog)]
    assert events == ["user_added", "token_created", "token_revoked"]
