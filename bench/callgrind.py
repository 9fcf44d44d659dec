"""A served process's instructions counted by callgrind: the command that runs it with counting
off, the switch around what is counted, and the count per call.

Counts repeat from run to run (to 0.2–1.3 % in the benches here) whatever else the machine
does, which timed CPU cannot: the instruction benches (``soap_served_instructions.py``,
``portal_instructions.py``) compare two servers in them. Only user space is counted: the
kernel's share of a request (its socket calls) and other processes' work are in no figure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The C allocator instead of pymalloc's arenas (valgrind runs it faster), and one hash seed, so
# that dict and set layouts (and so the counts) repeat from run to run.
ENV = {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}
_TOTALS = re.compile(r"^(?:summary|totals):\s*([0-9]+)", re.M)


def command(folder: Path, served: list[str]) -> list[str]:
    """``served`` under callgrind, counting off, every process it starts (a supervisor's
    workers) dumped into ``folder``."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        "--instr-atstart=no",
        f"--callgrind-out-file={folder}/callgrind.%p",
        *served,
    ]


@contextmanager
def counting() -> Iterator[None]:
    """Counting on in every process under callgrind for the block, then off and dumped."""
    subprocess.run(["callgrind_control", "-i", "on"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["callgrind_control", "-i", "off"], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d"], check=True, capture_output=True)


def per_call(folder: Path, calls: int, name: str) -> float:
    """Instructions per call of the busiest process dumped in ``folder`` (the worker, not its
    supervisor); exits the bench when nothing was counted."""
    counts = [
        int(found)
        for dump in folder.glob("callgrind.*")
        for found in _TOTALS.findall(dump.read_text(errors="replace"))
    ]
    if not counts or max(counts) == 0:
        sys.exit(f"no instructions counted for {name}")
    return max(counts) / calls
