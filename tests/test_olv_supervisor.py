"""The worker supervisor both servers run under (``olv.serving.Supervisor``), as real processes:
a worker that dies is replaced, SIGHUP replaces every worker, and SIGTERM stops them all
with exit status 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from olv import db
from tests.helpers import loopback
from tests.helpers.free_ports import free_port
from tests.helpers.soap import start_until_healthy, stop_process

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_for(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture(params=["soap", "portal"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    url = f"sqlite:///{tmp_path / 'olv.db'}"
    db.upgrade(url)
    port = free_port()
    env = {**os.environ, "OLV_DATABASE_URL": url, "OLV_PORTAL_WORKERS": "2"}
    if request.param == "soap":
        command = [
            sys.executable,
            "-m",
            "olv",
            "soap",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
        ]
    else:
        command = [sys.executable, "-m", "olv", "portal", "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    process = start_until_healthy(command, env, tmp_path / "server.log", base, request.param)
    try:
        yield process, base
    finally:
        stop_process(process)


def test_workers_are_replaced_rolled_and_stopped(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base = server
    wait_for(lambda: len(children(process.pid)) == 2)
    first = children(process.pid)

    # A worker that dies is replaced; the port keeps answering meanwhile.
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in children(process.pid) and len(children(process.pid)) == 2)
    assert loopback.get(f"{base}/healthz", timeout=5).status_code == 200

    # SIGHUP replaces every worker, one at a time.
    before = children(process.pid)
    process.send_signal(signal.SIGHUP)
    wait_for(lambda: not (children(process.pid) & before) and len(children(process.pid)) == 2)
    # A connection the kernel gives a new worker's socket waits for that worker's start: on
    # a loaded machine that start (imports, the app) can take longer than a few seconds.
    wait_for(lambda: loopback.get(f"{base}/healthz", timeout=30).status_code == 200, 60.0)

    # SIGTERM stops them all, and the supervisor exits 0.
    workers = children(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
