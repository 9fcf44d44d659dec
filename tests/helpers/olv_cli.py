"""``olv`` commands run as an operator would: a subprocess with the database in its setting;
and the same commands in this process, for the setup of tests about something else."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Mapping
from unittest import mock

from olv.config import get_settings
from tests.helpers import prewarmed


def olv(url: str, *args: str, stdin: str | None = None) -> str:
    """Standard output of ``olv ARGS`` against ``url``; fails the test, with the command's
    error output, when it does not exit 0."""
    result = prewarmed.run(args, {**os.environ, "OLV_DATABASE_URL": url}, stdin=stdin)
    assert result.returncode == 0, f"olv {' '.join(args)}:\n{result.stderr}"
    return result.stdout


def run_here(
    env: Mapping[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``olv ARGS`` run by :func:`olv.cli.run` in this process, with ``env`` added to the
    environment for the command only: its exit code and its output, as a process would give
    them. A process per command costs most of a second of CPU; the commands themselves are
    tested as processes too."""
    from olv.cli import run

    out, err = io.StringIO(), io.StringIO()
    get_settings.cache_clear()
    try:
        with (
            mock.patch.dict(os.environ, env),
            mock.patch.object(sys, "stdin", io.StringIO(stdin or "")),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = run(list(args))
    finally:
        get_settings.cache_clear()
    return subprocess.CompletedProcess(["olv", *args], code, out.getvalue(), err.getvalue())


def olv_here(env: Mapping[str, str], *args: str, stdin: str | None = None) -> str:
    """Standard output of :func:`run_here`; fails the test, with the command's error output,
    when it does not exit 0 (for the setup of tests about something else)."""
    result = run_here(env, *args, stdin=stdin)
    assert result.returncode == 0, (
        f"olv {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    )
    return result.stdout
