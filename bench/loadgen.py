"""Keep-alive load against a server under test, and the CPU everyone used meanwhile.

Two generators rotate over the pre-generated request corpus and check every answer (HTTP 200
carrying a ResponseCode element): ``wrk`` with ``bench/soap_wrk.lua`` (C, the default), and a
multi-process asyncio generator in Python for machines without wrk (it needs about twice
wrk's CPU per request, which it takes from the server on a small machine).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import wrk
from procstat import BackendCpu, busy_share, cpu_seconds, machine_busy, wait_for_quiet
from servers import Server
from soap_corpus import read_corpus

from olv.iicmva import SOAP_ACTION


@dataclass
class Run:
    label: str
    clients: int
    sent: int
    completed: int
    seconds: float
    failures: int
    confirmed: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float = 0.0  # cores busy in the server's processes
    db_cpu: float = 0.0  # cores busy in PostgreSQL backends of the benchmark database
    loadgen_cpu: float = 0.0  # cores busy in the load generator
    machine_cpu: float = 0.0  # share of all cores busy

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        """Server CPU time per answered request: robust against other load on the machine."""
        return 1000.0 * self.server_cpu / self.rps if self.rps else 0.0

    @property
    def other_cpu(self) -> float:
        """Cores busy outside the server, its database and the load generator."""
        busy = self.machine_cpu * (os.cpu_count() or 1)
        return max(0.0, busy - self.server_cpu - self.db_cpu - self.loadgen_cpu)

    def as_dict(self) -> dict[str, object]:
        return self.__dict__ | {"rps": self.rps, "cpu_ms_per_request": self.cpu_ms_per_request}


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile of sorted latencies in seconds, in milliseconds."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] * 1000


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------


def run_wrk(base: str, corpus_file: Path, clients: int, seconds: float, threads: int) -> dict:
    args = (str(corpus_file), SOAP_ACTION)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(
        wrk.command("soap_wrk.lua", base, clients, seconds, threads, *args), capture_output=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = wrk.summary(finished.stdout)
    if result is not None:
        result["seconds"] = result.pop("duration_us") / 1e6
        for key in ("p50", "p95", "p99", "max"):
            result[key] = result[key] / 1000.0
        result["cpu"] = cpu
        return result
    sys.exit(f"wrk gave no summary:\n{finished.stdout.decode()}\n{finished.stderr.decode()}")


# --------------------------------------------------------------------------------------------
# The Python generator
# --------------------------------------------------------------------------------------------


async def _client(
    port: int,
    wires: list[bytes],
    start: int,
    stop_at: float,
    latencies: list[float],
    totals: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    position = start
    try:
        while time.monotonic() < stop_at:
            wire = wires[position % len(wires)]
            position += 1
            totals[0] += 1
            began = time.perf_counter()
            writer.write(wire)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            totals[1] += 1
            if not head.startswith(b"HTTP/1.1 200") or b"ResponseCode>" not in body:
                totals[2] += 1
            elif b">Confirmed<" in body:
                totals[3] += 1
    except (OSError, asyncio.IncompleteReadError):
        totals[4] += 1
    finally:
        writer.close()


def _python_worker(
    port: int, corpus_file: str, clients: int, offset: int, seconds: float, conn: Connection
) -> None:
    wires = [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: text/xml; charset=utf-8\r\n"
            f'SOAPAction: "{SOAP_ACTION}"\r\n'
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for path, body in read_corpus(Path(corpus_file))
    ]
    latencies: list[float] = []
    totals = [0, 0, 0, 0, 0]  # sent, completed, failures, confirmed, socket errors

    async def main() -> float:
        stop_at = time.monotonic() + seconds
        began = time.monotonic()
        await asyncio.gather(
            *(
                _client(port, wires, (offset + i) * 7919, stop_at, latencies, totals)
                for i in range(clients)
            )
        )
        return time.monotonic() - began

    elapsed = asyncio.run(main())
    conn.send((totals, latencies, elapsed))
    conn.close()


def run_python(base: str, corpus_file: Path, clients: int, seconds: float, procs: int) -> dict:
    port = int(base.rsplit(":", 1)[1])
    procs = max(1, min(procs, clients))
    context = multiprocessing.get_context("fork")
    workers = []
    for index in range(procs):
        share = clients // procs + (1 if index < clients % procs else 0)
        parent, child = context.Pipe(duplex=False)
        process = context.Process(
            target=_python_worker,
            args=(port, str(corpus_file), share, index * 1000, seconds, child),
        )
        process.start()
        workers.append((process, parent))
    totals = [0, 0, 0, 0, 0]
    latencies: list[float] = []
    elapsed = cpu = 0.0
    for process, parent in workers:
        part, lat, took = parent.recv()
        _, _, usage = os.wait4(process.pid, 0)
        cpu += usage.ru_utime + usage.ru_stime
        totals = [a + b for a, b in zip(totals, part, strict=True)]
        latencies.extend(lat)
        elapsed = max(elapsed, took)
    latencies.sort()
    return {
        "sent": totals[0],
        "completed": totals[1],
        "failures": totals[2],
        "confirmed": totals[3],
        "socket_errors": totals[4],
        "timeouts": 0,
        "seconds": elapsed,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": latencies[-1] * 1000 if latencies else 0.0,
        "cpu": cpu,
    }


# --------------------------------------------------------------------------------------------
# One measured run
# --------------------------------------------------------------------------------------------


class LoadGenerator:
    def __init__(
        self, kind: str, corpus_file: Path, threads: int, quiet_wait: float, database: str = ""
    ) -> None:
        self.kind = kind
        self.corpus_file = corpus_file
        self.threads = threads
        self.quiet_wait = quiet_wait
        self.database = database  # a PostgreSQL database whose backends' CPU is counted

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
            first = (version.stdout or version.stderr).splitlines()[0].split("Copyright")[0]
            return (
                f"{first.strip()} (C, {self.threads} thread(s), Lua script "
                "bench/soap_wrk.lua rotating over pre-generated requests)"
            )
        return (
            f"Python asyncio raw-socket generator, {self.threads} process(es) "
            "(bench/soap_bench.py --loadgen python)"
        )

    def run(
        self, server: Server, clients: int, seconds: float, label: str, settle: float = 0.0
    ) -> Run:
        """``clients`` for ``seconds`` against ``server``. The server's CPU is read ``settle``
        seconds after the load ends, so that what it does for the run's requests afterwards
        (the audit rows it writes in batches) counts for them."""
        if self.quiet_wait > 0:
            wait_for_quiet(self.quiet_wait)
        pids = server.pids()
        cpu_before = cpu_seconds(pids)
        backends = BackendCpu(self.database)
        backends.start()
        machine_before = machine_busy()
        generate = run_wrk if self.kind == "wrk" else run_python
        result = generate(server.base, self.corpus_file, clients, seconds, self.threads)
        machine_after = machine_busy()
        if settle > 0:
            time.sleep(settle)
        server_cpu = cpu_seconds(pids) - cpu_before
        db_cpu = backends.stop()
        elapsed = result["seconds"] or seconds
        return Run(
            label=label,
            clients=clients,
            sent=result["sent"],
            completed=result["completed"],
            seconds=result["seconds"],
            failures=result["failures"],
            confirmed=result["confirmed"],
            socket_errors=result["socket_errors"] + result["timeouts"],
            p50_ms=result["p50"],
            p95_ms=result["p95"],
            p99_ms=result["p99"],
            max_ms=result["max"],
            server_cpu=server_cpu / elapsed,
            db_cpu=db_cpu / elapsed,
            loadgen_cpu=result["cpu"] / elapsed,
            machine_cpu=busy_share(machine_before, machine_after),
        )
