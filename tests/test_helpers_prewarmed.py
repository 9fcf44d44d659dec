"""The tests' server launcher (tests/helpers/prewarmed.py): a server forked from it must be the
command it was given — its own arguments, environment, working directory, log and exit status —
or the suite's server tests would be testing something else than ``python -m olv``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import loopback, prewarmed
from tests.helpers.portal import portal_server

pytestmark = pytest.mark.skipif(
    not prewarmed.enabled(), reason="OLV_TEST_PREWARMED=0: servers start as plain subprocesses"
)


def test_a_command_gets_its_arguments_environment_and_exit_status(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'made.db'}"
    log = tmp_path / "upgrade.log"
    made = prewarmed.launch(["db", "upgrade"], {**os.environ, "OLV_DATABASE_URL": url}, log)
    assert made.wait(60) == 0, log.read_text()
    assert (tmp_path / "made.db").is_file()  # the database of its own environment

    log = tmp_path / "usage.log"
    wrong = prewarmed.launch(["no-such-command"], dict(os.environ), log)
    assert wrong.wait(60) == 2
    assert "no-such-command" in log.read_text()  # its error output went to its own log
    assert wrong.poll() == 2  # reaped once, remembered


def test_a_served_portal_stops_gracefully_on_sigterm(sqlite_template: Path, tmp_path: Path) -> None:
    database = tmp_path / "state.db"
    database.write_bytes(sqlite_template.read_bytes())
    with portal_server({"OLV_DATABASE_URL": f"sqlite:///{database}"}, tmp_path) as portal:
        process = portal.process
        assert isinstance(process, prewarmed.Launched)
        assert loopback.get(f"{portal.base}/healthz").status_code == 200
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(0.2)  # still serving
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0  # a graceful stop, as from a process manager
    assert not Path(f"/proc/{process.pid}").exists()  # reaped by the launcher when polled
    process.send_signal(signal.SIGKILL)  # a no-op once reaped: the pid may be another's now


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (["bob", "lookup", "-"], "X" * (4 << 20) + "\n"),  # reads its input; warns
        (["no-such-command"], None),  # a usage error: exit 2, the message on stderr
        (["db", "current"], None),
    ],
)
def test_run_gives_what_the_installed_command_gives(
    sqlite_template: Path, tmp_path: Path, args: list[str], stdin: str | None
) -> None:
    database = tmp_path / "state.db"
    database.write_bytes(sqlite_template.read_bytes())
    env = {**os.environ, "OLV_DATABASE_URL": f"sqlite:///{database}"}
    forked = prewarmed.run(args, env, stdin=stdin, cwd=tmp_path)
    installed = subprocess.run(
        [str(Path(sys.executable).with_name("olv")), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        installed.returncode,
        installed.stdout,
        installed.stderr,
    )
    assert forked.stdout or forked.stderr  # each of them says something
