"""Running wrk with one of the bench's scripts, and reading the summary line they print
(``bench/wrk_common.lua``: ``OLVBENCH {json}``, latencies in microseconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def command(
    script: str, base: str, clients: int, seconds: float, threads: int, *args: str
) -> list[str]:
    """wrk with keep-alive ``clients`` over ``threads`` threads for ``seconds``, running
    ``bench/<script>`` with ``args`` after ``--``."""
    return [
        "wrk",
        f"-c{clients}",
        f"-t{min(threads, clients)}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(HERE / script),
        base,
        "--",
        *args,
    ]


def summary(stdout: bytes) -> dict[str, Any] | None:
    """The script's summary, or None when wrk printed none (it failed)."""
    for line in stdout.decode().splitlines():
        if line.startswith("OLVBENCH "):
            return json.loads(line[len("OLVBENCH ") :])
    return None
