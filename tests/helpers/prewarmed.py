"""``olv`` commands run from a process that has imported OLV's libraries already.

A portal or SOAP server, or any ``olv`` command, spends most of its start importing (FastAPI,
SQLAlchemy, Spyne, Typer): most of a second of CPU, and the suite starts several hundred.
Each test worker keeps one launcher process that has done those imports; a command is forked
from it and runs ``olv.cli.main`` with its own arguments, environment, working directory,
input, output and error output, so it is the same command in a real process of its own (a
server listening on a real socket, exiting with its own status). Only the imports are shared,
and they read nothing from the environment that the command sets later (prometheus client's
value store is picked again by ``olv.metrics.multiprocess_dir``).

:func:`launch` starts a server (:func:`tests.helpers.soap.start_until_healthy` uses it);
:func:`run` stands in for ``subprocess.run([olv, ...], capture_output=True, text=True)``.
The launcher stays the commands' parent: it reaps each only when asked
(:meth:`Launched.poll`), so a server's pid cannot be reused while a test may still signal it.

``OLV_TEST_PREWARMED=0`` runs every command as a plain ``python -m olv`` subprocess instead;
``tests/test_cli_demo.py`` always runs the installed ``olv`` executable, and
``tests/test_deploy_systemd.py`` runs it for one of the units' commands.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# The servers' own command modules, which make no metric when imported.
COMMANDS = ("olv.cli", "portal.cli", "service.cli", "service.server")
# What the servers' apps import (found once per launcher, in a forked child); of it only the
# libraries are imported ahead: our own app modules make metrics when imported, and a metric
# made before the command picks prometheus client's multiprocess store would miss it.
APPS = ("portal.app", "service.asgi")
OURS = ("olv", "portal", "service", "bob_loader", "enforcement", "idcards", "xsd", "tests")
POLL_SECONDS = 0.02


def enabled() -> bool:
    return os.environ.get("OLV_TEST_PREWARMED", "1") != "0"


class Launched:
    """A command (a server, mostly) forked by the launcher, with the part of
    :class:`subprocess.Popen` that the tests use: ``pid``, ``returncode``, ``poll``, ``wait``, ``send_signal``, ``terminate``,
    ``kill``."""

    def __init__(self, launcher: _Launcher, pid: int, args: list[str]) -> None:
        self._launcher = launcher
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._launcher.ask(op="poll", pid=self.pid)["code"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(POLL_SECONDS)
        return code

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # unreaped until polled: the pid is still this command's
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Launcher:
    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.prewarmed"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lock = threading.Lock()
        atexit.register(self.close)

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the command launcher exited ({self._process.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the command launcher failed: {answer['error']}")
        return answer

    def alive(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()  # the launcher ends at the end of its input
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process.stdout.close()


_launcher: _Launcher | None = None
_owner = 0


def launch(
    args: list[str],
    env: Mapping[str, str],
    log: Path,
    *,
    stdin: Path | None = None,
    stderr: Path | None = None,
    cwd: Path | None = None,
) -> Launched:
    """``olv ARGS`` forked from this process's launcher (started on first use): its standard
    output to ``log``, its error output there too unless ``stderr`` names a file, its input
    from ``stdin`` (else none)."""
    global _launcher, _owner
    if _launcher is None or _owner != os.getpid() or not _launcher.alive():
        _launcher, _owner = _Launcher(), os.getpid()  # a new one if the last one died
    pid = _launcher.ask(
        op="spawn",
        args=args,
        env=dict(env),
        stdout=str(log),
        stderr=str(stderr or log),
        stdin=str(stdin) if stdin else os.devnull,
        cwd=str(cwd or os.getcwd()),
    )["pid"]
    return Launched(_launcher, pid, ["olv", *args])


def run(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``olv ARGS`` as ``subprocess.run([olv, *ARGS], capture_output=True, text=True)`` runs
    it — its own process, arguments, environment (this one's unless given), input, output,
    error output and exit status — forked from the launcher (a plain subprocess when
    ``OLV_TEST_PREWARMED=0``)."""
    env = dict(os.environ if env is None else env)
    if not enabled():
        command = [sys.executable, "-m", "olv", *args]
        return subprocess.run(
            command, input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
        )
    with tempfile.TemporaryDirectory(prefix="olv-run-") as folder:
        files = Path(folder)
        given = None
        if stdin is not None:
            given = files / "stdin"
            given.write_text(stdin)
        out, err = files / "stdout", files / "stderr"
        process = launch(list(args), env, out, stdin=given, stderr=err, cwd=cwd)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
        return subprocess.CompletedProcess(
            ["olv", *args], code, out.read_text(errors="replace"), err.read_text(errors="replace")
        )


# --- the launcher process ------------------------------------------------------------------------


def _libraries() -> list[str]:
    """The library modules that the apps import, found in a forked child that imports them."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            for name in APPS:
                importlib.import_module(name)
            found = [name for name in sys.modules if name.split(".")[0] not in OURS]
            with os.fdopen(write, "w") as out:
                out.write("\n".join(found))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        names = answer.read().split()
    os.waitpid(pid, 0)
    return names


def _preload() -> None:
    for name in (*COMMANDS, *_libraries()):
        with contextlib.suppress(Exception):  # a module only another import can make
            importlib.import_module(name)
    # The migrations shipped with the code, which every server checks its database against
    # at start (read from the migration scripts once, then cached).
    from olv import db

    db._code_revisions()
    from prometheus_client import REGISTRY

    made = [family.name for family in REGISTRY.collect() if family.name.startswith("olv_")]
    if made:
        raise RuntimeError(f"the launcher made OLV metrics before any command: {made}")


def _serve() -> None:
    _preload()
    # The requests come on copies of stdin/stdout: a server gets /dev/null and its log as 0-2.
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    for line in requests:
        request = json.loads(line)
        try:
            if request["op"] == "spawn":
                pid = os.fork()
                if pid == 0:
                    _run_command(request, (requests.fileno(), answers.fileno()))
                answer: dict[str, Any] = {"pid": pid}
            else:
                done, status = os.waitpid(request["pid"], os.WNOHANG)
                answer = {"code": os.waitstatus_to_exitcode(status) if done else None}
        except Exception as exc:  # the test gets it as a RuntimeError
            answer = {"error": repr(exc)}
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()


def _run_command(request: dict[str, Any], launcher_fds: tuple[int, ...]) -> None:
    """In the forked child: become ``olv ARGS`` as ``python -m olv ARGS`` would; never
    returns."""
    code = 1
    try:
        for fd in launcher_fds:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        given = os.open(request["stdin"], os.O_RDONLY)
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = out
        if request["stderr"] != request["stdout"]:
            err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for fd, target in ((given, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
        for fd in {given, out, err}:
            os.close(fd)
        sys.argv = ["olv", *request["args"]]
        from olv.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


if __name__ == "__main__":
    _serve()
    # Nothing to flush or close: skip the interpreter's teardown, where the native libraries
    # imported ahead (zxing-cpp's bindings) report the objects they never freed.
    os._exit(0)
