"""Instructions per SOAP request, counted by callgrind: a figure the machine's load cannot move.

    python bench/soap_instructions.py [--db sqlite|postgresql] [--calls 1000]

Timings on machines of this kind move 2-3x from day to day and with whatever else runs, so a
change of a few per cent in the service's own work is lost in them. Instructions are not:
``valgrind --tool=callgrind`` counts the same total for the same code and inputs whatever the
machine does. What is counted, each in its own interpreter under callgrind:

- **ours**: the service's ASGI application (``service.asgi.AsgiSoap``, everything the server
  runs for a request except uvicorn's HTTP parsing and the socket writes), called in-process
  on one event loop with the bench's request corpus, on a database loaded with the bench's
  policies — the database read, the audit writer thread and all;
- **floor**: the floor's application (``bench/soap_floor.py``) called the same way;
- **null**: an application that reads the body and sends a fixed answer, the same way: what
  the driving itself costs, taken off both before their ratio.

Each is run twice, for ``--calls`` requests and for none after the same warm-up; the
difference divided by ``--calls`` is the count per request, so start-up and warm-up cancel
out. On PostgreSQL the server's own work is not counted (it runs in its backend process).
Needs ``valgrind`` (Debian: ``apt-get install valgrind``); a run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from scratch_db import DEFAULT_PG_URL, fresh_database, olv
from soap_corpus import (
    generate_corpus,
    generate_policies,
    read_corpus,
    write_corpus,
    write_policy_csv,
)

WARMUP = 300
_COLLECTED = re.compile(r"Collected\s*:\s*([0-9]+)")


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "http_version": "1.1",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"content-type", b"text/xml; charset=utf-8"),
            (b"soapaction", b'""'),
            (b"content-length", str(len(body)).encode()),
        ],
    }


async def _drive(app: Any, requests: list[tuple[str, bytes]], calls: int) -> None:
    async def once(path: str, body: bytes) -> int:
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(_scope(path, body), receive, send)
        return int(sent[0]["status"])

    for n in range(WARMUP + calls):
        path, body = requests[n % len(requests)]
        status = await once(path, body)
        if status != 200:
            sys.exit(f"request {n} answered HTTP {status}")


async def _null(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    body = b"<answer/>" if message["body"] else b""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _child(which: str, corpus: Path, calls: int) -> None:
    """Runs under callgrind: build the application, then answer ``calls`` requests."""
    requests = read_corpus(corpus)
    if which == "ours":
        from service.asgi import AsgiSoap

        app: Any = AsgiSoap()
        _ = app.wsgi.verifier  # what the server's start-up does before the first request
    elif which == "null":
        app = _null
    else:
        import soap_floor

        soap_floor.POLICIES.update(soap_floor.load_policies(os.environ["OLV_BENCH_POLICIES"]))
        app = soap_floor.app
    asyncio.run(_drive(app, requests, calls))
    if which == "ours":
        app.wsgi.close()  # the audit writer's last rows are written inside the count


def _count(which: str, corpus: Path, calls: int, env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory() as out:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}/callgrind.out",
            sys.executable,
            __file__,
            "--child",
            which,
            "--corpus",
            str(corpus),
            "--calls",
            str(calls),
        ]
        # The C allocator instead of pymalloc's arenas (valgrind runs it faster), and one hash
        # seed, so that dict and set layouts (and so the counts) repeat from run to run.
        result = subprocess.run(
            command,
            env={**env, "PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
        )
    found = _COLLECTED.search(result.stderr)
    if result.returncode != 0 or found is None:
        sys.exit(f"callgrind run of {which} failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    return int(found.group(1))


def per_request(which: str, corpus: Path, calls: int, env: dict[str, str]) -> float:
    return (_count(which, corpus, calls, env) - _count(which, corpus, 0, env)) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=20000)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--child", choices=("ours", "floor", "null"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.corpus, args.calls)
        return 0

    from procstat import code_revision

    rng = random.Random(args.seed)
    today = date.today()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        policies = generate_policies(args.policies, today, rng)
        write_policy_csv(work / "policies.csv", policies, today, args.seed)
        write_corpus(work / "corpus.txt", generate_corpus(policies, today, 5000, rng))
        with fresh_database(args.db, work, args.pg_url) as url:
            env = {
                **os.environ,
                "OLV_DATABASE_URL": url,
                "OLV_BENCH_POLICIES": str(work / "policies.csv"),
            }
            olv("db", "upgrade", env=env)
            olv("policies", "import", str(work / "policies.csv"), env=env)
            ours = per_request("ours", work / "corpus.txt", args.calls, env)
            floor = per_request("floor", work / "corpus.txt", args.calls, env)
            null = per_request("null", work / "corpus.txt", args.calls, env)
    print(f"code {code_revision()}; {args.db}; {args.calls} requests counted after {WARMUP}")
    print(f"instructions per request: ours {ours:,.0f}, floor {floor:,.0f}, driving {null:,.0f}")
    print(
        f"ours / floor, the driving taken off: {(ours - null) / (floor - null):.2f}x"
        " (in-process: the HTTP server's share, the same for both, is not in it)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
