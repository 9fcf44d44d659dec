"""``olv`` commands run as an operator would: a subprocess with the database in its setting."""

from __future__ import annotations

import os
import subprocess
import sys


def olv(url: str, *args: str, stdin: str | None = None) -> str:
    """Standard output of ``olv ARGS`` against ``url``; fails the test, with the command's
    error output, when it does not exit 0."""
    result = subprocess.run(
        [sys.executable, "-m", "olv", *args],
        env={**os.environ, "OLV_DATABASE_URL": url},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"olv {' '.join(args)}:\n{result.stderr}"
    return result.stdout
