"""What the machine did during a bench run, read from /proc (Linux only).

CPU time of a process tree and of the PostgreSQL backends serving one database, the busy
share of all cores, a wait for other work to stop before a run, and a one-line summary of the
machine and the code measured.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent


def _children(pid: int) -> list[int]:
    found = []
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(c) for c in handle.read().split())
    return found


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def database_backends(database: str) -> list[int]:
    """PostgreSQL backend processes serving ``database`` (their title names it)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as handle:
            title = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if title.startswith("postgres:") and f" {database} " in title:
                found.append(int(entry))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds of ``pids`` so far (vanished processes count 0)."""
    total = 0
    for pid in pids:
        with suppress(OSError), open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants now (a server and its worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError, IndexError), open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.append(current)
            todo.extend(children.get(current, []))
    return found


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds([pid]) for pid in pids}


class BackendCpu:
    """CPU of a database's PostgreSQL backends between ``start()`` and ``stop()``.

    Backends come and go during a run (pool connections), so each is counted from its own
    first sight; ``database`` empty (SQLite) counts nothing.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.before: dict[int, float] = {}

    def start(self) -> None:
        self.before = cpu_by_pid(database_backends(self.database)) if self.database else {}

    def stop(self) -> float:
        if not self.database:
            return 0.0
        after = cpu_by_pid(database_backends(self.database))
        return sum(t - self.before.get(pid, 0.0) for pid, t in after.items())


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until other work leaves the cores idle; returns the load.

    The load is the busy share of all cores over one second; a benchmark on a shared
    machine is only meaningful while nothing else runs.
    """
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy()
        time.sleep(1.0)
        load = busy_share(before, machine_busy())
        if load <= threshold or time.monotonic() >= deadline:
            if load > threshold:
                print(
                    f"  warning: the machine is {100 * load:.0f} % busy with other work", flush=True
                )
            return load
        time.sleep(1.0)


def code_revision() -> str:
    """The commit measured, and whether the service's code differed from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "service", "olv", "xsd"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line for line in dirty if line.strip()]
    return head + (f" with {len(changed)} uncommitted service file(s)" if changed else "")


def calibration_ms(rounds: int = 9) -> float:
    """Best of ``rounds`` timings, in ms, of a fixed single-threaded pure-Python workload.

    Figures from different days or virtual machines are only comparable with the speed of
    the machine beside them: the same code measured 2-4x apart on two VMs of the same kind.
    Lower is faster.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        table = {f"k{i}": i for i in range(50_000)}
        total = sum(i * i % 7 for i in range(200_000)) + sum(sorted(table.values())[::97])
        best = min(best, time.perf_counter() - start)
    assert total > 0
    return round(best * 1000, 1)


def machine_summary() -> dict[str, str]:
    model = "unknown"
    with suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with suppress(OSError), open("/proc/meminfo") as handle:
        kib = int(handle.readline().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return {
        "cores": str(os.cpu_count()),
        "memory": memory,
        "cpu": model,
        "python": platform.python_version(),
        "date": datetime.now(UTC).date().isoformat(),
        "revision": code_revision(),
        "calibration": f"{calibration_ms()} ms",
    }
