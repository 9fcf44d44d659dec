"""End to end, all real: an SFTP upload into an account's inbox, ``olv bob watch`` as a process,
the database, the archive and outbox, a summary e-mail through an SMTP server — and the
watcher's behaviour when it is stopped (SIGTERM) or killed (SIGKILL) in the middle of a load.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import select

from bob_loader.contacts import add_contact
from bob_loader.models import BobCurrent, BobFile
from olv import db
from tests.helpers.bob_intake_data import vin, write_bob
from tests.helpers.sftp_server import SSHD, intake_root, sftp_server
from tests.helpers.smtp_capture import SmtpCapture, smtp_server

pytestmark = pytest.mark.slow

OLV = str(Path(sys.executable).with_name("olv"))
NAIC = "12345"
CONTACT = "bob-reports@insurer.example"
STAMPED = re.compile(r"^\d{8}T\d{6}Z_Acme 20250101\.txt$")
DEPLOY_SSHD = Path(__file__).resolve().parents[1] / "deploy" / "sshd" / "sshd_config.olv"


def production_force_command() -> str:
    """The ForceCommand of the production sshd configuration, so the test runs under it."""
    [command] = [
        line.split(None, 1)[1]
        for line in DEPLOY_SSHD.read_text().splitlines()
        if line.strip().startswith("ForceCommand")
    ]
    return command


@pytest.fixture
def intake_dir(tmp_path: Path) -> Iterator[Path]:
    with intake_root(tmp_path) as base:
        directory = base / "intake"
        (directory / "acme" / "inbox").mkdir(parents=True)
        yield directory


def olv_env(tmp_path: Path, smtp: SmtpCapture | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env.update(
        HOME=str(tmp_path),  # no real ~/.ssh
        OLV_INTAKE_POLL_SECONDS="0.3",
        OLV_INTAKE_STABLE_SECONDS="1",
    )
    if smtp is not None:
        env.update(OLV_SMTP_HOST=smtp.host, OLV_SMTP_PORT=str(smtp.port), OLV_SMTP_TLS="none")
    env.update(extra)
    return env


def start_watcher(directory: Path, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    with log.open("ab") as err:
        return subprocess.Popen(
            [OLV, "bob", "watch", str(directory), *args], env=env, stderr=err, stdout=err
        )


def wait_until(condition: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; watcher log:\n{log.read_text()}")
        time.sleep(0.05)


def visible(path: Path) -> list[str]:
    """The files a person would see in ``path``; none while the watcher has not made it yet."""
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if not p.name.startswith("."))


def bob_state(url: str) -> tuple[list[str], dict[str, int]]:
    """Statuses of all received files, and the current record count per NAIC."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            statuses = list(conn.scalars(select(BobFile.status).order_by(BobFile.id)))
            current = {r.naic: r.records for r in conn.execute(select(BobCurrent))}
    finally:
        engine.dispose()
    return statuses, current


def test_upload_by_sftp_is_loaded_archived_reported_and_mailed(
    db_url: str, tmp_path: Path, intake_dir: Path
) -> None:
    account = intake_dir / "acme"
    engine = db.make_engine(db_url)
    with engine.begin() as conn:
        add_contact(conn, NAIC, CONTACT, "EDI desk")
    engine.dispose()
    data = write_bob(tmp_path / "Acme 20250101.txt", NAIC, good=60, bad=2)
    log = tmp_path / "watcher.log"

    with (
        smtp_server() as smtp,
        sftp_server(account, tmp_path / "ssh", production_force_command()) as server,
    ):
        env = olv_env(tmp_path, smtp)
        watcher = start_watcher(intake_dir, env, log)
        try:
            push = subprocess.run(
                [OLV, "bob", "push", str(data), "--sftp", server.spec("inbox/"),
                 "--port", str(server.port), "--key", str(server.keys.client_key),
                 "--known-hosts", str(server.keys.known_hosts)],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert push.returncode == 0, push.stderr
            wait_until(lambda: bool(visible(account / "archive")), 30, "the archive", log)
            [mail] = smtp.wait_for(1)
            watcher.send_signal(signal.SIGTERM)
            assert watcher.wait(15) == 0, log.read_text()
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.wait()

    [archived] = visible(account / "archive")
    assert STAMPED.match(archived)
    assert (account / "archive" / archived).read_bytes() == data.read_bytes()
    assert visible(account / "inbox") == []
    assert visible(account / "outbox") == [f"{archived}.errors.txt"]
    report = (account / "outbox" / f"{archived}.errors.txt").read_text()
    assert "line 61" in report and "line 62" in report

    assert bob_state(db_url) == (["accepted"], {NAIC: 60})
    found = subprocess.run(
        [OLV, "bob", "lookup", vin(0), vin(61)], env=env, capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    [hit] = [json.loads(line) for line in found.stdout.splitlines()]
    assert hit["naic"] == NAIC and hit["source_file"] == "Acme 20250101.txt"

    assert mail.rcpt_tos == [CONTACT]
    body = mail.message.get_content()
    assert "accepted" in mail.message["Subject"]
    assert "Records:   60" in body and "Errors:    2" in body
    assert f"outbox/{archived}.errors.txt" in body
    assert "TESTPERSON" not in body and vin(0) not in body  # no insured data in e-mail


def test_watcher_killed_in_the_middle_of_a_load_loads_the_file_once_after_restart(
    db_url: str, tmp_path: Path, intake_dir: Path
) -> None:
    account = intake_dir / "acme"
    write_bob(account / "inbox" / "Acme 20250101.txt", NAIC, good=40)
    log = tmp_path / "watcher.log"

    with smtp_server() as smtp:
        # No NAIC contact here: the summary goes to the account's fallback address.
        env = olv_env(tmp_path, smtp, OLV_INTAKE_ACCOUNT_EMAILS="acme=edi@acme.example")
        # The loader's crash-test hook holds the swap transaction open long enough to kill it.
        first = start_watcher(intake_dir, {**env, "OLV_BOB_TEST_PAUSE_BEFORE_COMMIT": "30"}, log)
        try:
            wait_until(lambda: "test hook" in log.read_text(), 30, "the load to start", log)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert visible(account / "inbox") == [] and visible(account / "archive") == []
        assert bob_state(db_url)[1] == {}  # the killed load left no master behind

        restarted = subprocess.run(
            [OLV, "bob", "watch", str(intake_dir), "--once"], env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert restarted.returncode == 0, restarted.stderr
        [mail] = smtp.wait_for(1)

    assert len(visible(account / "archive")) == 1
    assert os.listdir(account / "archive" / ".processing") == []
    assert bob_state(db_url) == (["accepted"], {NAIC: 40})
    assert mail.rcpt_tos == ["edi@acme.example"]
    assert "accepted" in mail.message["Subject"]
    assert len(smtp.received) == 1


def test_sigterm_during_a_load_finishes_the_file_and_exits_0(
    db_url: str, tmp_path: Path, intake_dir: Path
) -> None:
    account = intake_dir / "acme"
    write_bob(account / "inbox" / "Acme 20250101.txt", NAIC, good=40)
    log = tmp_path / "watcher.log"
    env = olv_env(tmp_path, OLV_BOB_TEST_PAUSE_BEFORE_COMMIT="1.5")
    watcher = start_watcher(intake_dir, env, log)
    try:
        wait_until(lambda: "test hook" in log.read_text(), 30, "the load to start", log)
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(30) == 0, log.read_text()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()

    assert len(visible(account / "archive")) == 1
    assert visible(account / "inbox") == []
    assert bob_state(db_url) == (["accepted"], {NAIC: 40})
    assert "summaries are not e-mailed" in log.read_text()


def test_the_production_sshd_configuration_is_accepted_by_sshd(tmp_path: Path) -> None:
    if not Path(SSHD).is_file():
        pytest.skip(f"OpenSSH server not installed ({SSHD}); install openssh-server")
    host_key = tmp_path / "host_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(host_key))
    host_key.chmod(0o600)
    config = tmp_path / "sshd_config"
    config.write_text(f"HostKey {host_key}\nUsePAM no\nInclude {DEPLOY_SSHD}\n")
    checked = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
