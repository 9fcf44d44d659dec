"""Instructions per SOAP request of a whole server worker, uvicorn included, counted by
callgrind beside the floor's: a CPU ratio that the machine's load cannot move.

    python bench/soap_served_instructions.py [--db sqlite|postgresql] [--calls 3000]

``bench/soap_instructions.py`` counts the service's application called in-process; this
counts what a worker process of ``olv soap serve --workers 1`` runs for a request over a real
socket: uvicorn's HTTP parsing and writes, the event loop, the application, the audit writer
thread. The floor (``bench/soap_floor.py``, uvicorn's own protocol) is served and counted the
same way. Each server runs under callgrind with counting off; after a warm-up, counting is
switched on for ``--calls`` requests sent over ``--connections`` keep-alive connections, then
off again, so start-up and warm-up stay out. Only user-space instructions are counted: the
kernel's share of a request (the socket calls) is in neither figure, nor, with
``--db postgresql``, the database backends' work (other processes): only what the worker
spends on its side of the reads and the audit's ``COPY``. Needs ``valgrind``; a run takes a
few minutes.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import callgrind
from procstat import code_revision
from scratch_db import DEFAULT_PG_URL, analyze, fresh_database, olv
from servers import start_server
from soap_corpus import (
    generate_corpus,
    generate_policies,
    read_corpus,
    write_corpus,
    write_policy_csv,
)

from olv.iicmva import SOAP_ACTION

WARMUP = 400
START_SECONDS = 600  # a server's start-up under valgrind, uninstrumented
_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*([0-9]+)")
FLOOR_SCRIPT = Path(__file__).with_name("soap_floor.py")


def _send(port: int, requests: list[tuple[str, bytes]], count: int, connections: int) -> None:
    """``count`` requests over ``connections`` keep-alive connections, one at a time on each;
    every answer must be a 200. Written by hand so that each request carries the headers of
    wrk's in ``soap_bench.py`` and nothing more: sent through httpx (with its own Accept,
    Accept-Encoding and User-Agent), the counts moved by 3-4 % for both servers."""
    failures: list[str] = []

    def client(number: int) -> None:
        share = count // connections + (number < count % connections)
        with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
            pending = b""
            for n in range(share):
                path, body = requests[(number + n * connections) % len(requests)]
                head = (
                    f"POST {path} HTTP/1.1\r\nHost: bench\r\n"
                    f'Content-Type: text/xml; charset=utf-8\r\nSOAPAction: "{SOAP_ACTION}"\r\n'
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                sock.sendall(head.encode() + body)
                while True:
                    end = pending.find(b"\r\n\r\n")
                    if end >= 0:
                        found = _LENGTH.search(pending, 0, end + 2)
                        size = int(found.group(1)) if found else 0
                        if len(pending) >= end + 4 + size:
                            if not pending.startswith(b"HTTP/1.1 200 "):
                                failures.append(pending[:60].decode(errors="replace"))
                                return
                            pending = pending[end + 4 + size :]
                            break
                    chunk = sock.recv(65536)
                    if not chunk:
                        failures.append("connection closed")
                        return
                    pending += chunk

    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"requests failed: {failures[:3]}")


def served_per_request(
    name: str,
    command: list[str],
    env: dict[str, str],
    requests: list[tuple[str, bytes]],
    calls: int,
    connections: int,
    out: Path,
) -> float:
    """Instructions per request of the busiest process ``command`` starts (its worker)."""
    folder = out / name
    folder.mkdir()
    server = start_server(
        "server",
        callgrind.command(folder, command),
        {**env, **callgrind.ENV},
        folder,
        wait_seconds=START_SECONDS,
    )
    try:
        _send(server.port, requests, WARMUP, connections)
        time.sleep(2)  # the warm-up's audit rows written before counting starts
        with callgrind.counting():
            _send(server.port, requests, calls, connections)
            time.sleep(2)  # and this run's rows, inside the count
    finally:
        server.stop(120)
    return callgrind.per_call(folder, calls, name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("OLV_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--policies", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    today = date.today()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        policies = generate_policies(args.policies, today, rng)
        policy_csv = work / "policies.csv"
        write_policy_csv(policy_csv, policies, today, args.seed)
        write_corpus(work / "corpus.txt", generate_corpus(policies, today, 5000, rng))
        requests = read_corpus(work / "corpus.txt")
        with fresh_database(args.db, work, args.pg_url) as url:
            env = {**os.environ, "OLV_DATABASE_URL": url}
            env.pop("OLV_NAICS", None)  # every NAIC of the generated book is ours
            olv("db", "upgrade", env=env)
            olv("policies", "import", str(policy_csv), env=env)
            if args.db == "postgresql":
                analyze(url)  # planner statistics (the SQLite rows recorded were made without)
            ours_command = [sys.executable, "-m", "olv", "soap", "serve", "--workers", "1"]
            floor_command = [sys.executable, str(FLOOR_SCRIPT), "--stack", "bare"]
            floor_command += ["--workers", "1", "--policies", str(policy_csv)]
            counted = {
                name: served_per_request(
                    name, command, env, requests, args.calls, args.connections, work
                )
                for name, command in (("ours", ours_command), ("floor", floor_command))
            }
    ours, floor = counted["ours"], counted["floor"]
    print(
        f"code {code_revision()}; {args.db}; {args.calls} requests over {args.connections}"
        f" connections counted after {WARMUP}"
    )
    print(f"instructions per request, whole worker: ours {ours:,.0f}, floor {floor:,.0f}")
    print(f"ours / floor: {ours / floor:.2f}x (user space only: the socket calls' kernel share")
    print("  is in neither)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
