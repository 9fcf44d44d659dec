"""State portal benchmark (SPEC §4): verifications end to end through ``olv portal serve``.

    python bench/portal_bench.py [--db sqlite|postgresql] [--portal-workers N]
                                 [--soap-workers N] [--loadgen wrk|python] [--smoke]

What it does, in one run:

1. creates fresh databases: the insurer's (SQLite, ``--vehicles`` policies of NAIC 10001 imported
   with ``olv policies import``) and the state's (``--db``: SQLite file, or a PostgreSQL database
   it creates and drops) with the same vehicles in a book-of-business file loaded by the
   loader, 20 vehicles of a *hung* insurer (NAIC 30003: a socket that accepts and never
   answers), both insurers registered, and one admin with an API token per client;
2. starts ``olv soap serve`` (``--soap-workers``, else its default) and ``olv portal serve``
   (``--portal-workers``) on loopback ports;
3. from a separate load-generator process, keep-alive:
   a. 32 clients verify random vehicles for ``--duration`` seconds (after a warm-up):
      throughput, p50/p99 (target: >= 300/s, p99 <= 100 ms). ``--loadgen wrk`` (the
      default where installed; Debian: ``apt-get install wrk``) runs them as one wrk thread
      with 32 connections (``bench/portal_wrk.lua``, the clients' tokens in turn);
      ``--loadgen python`` as 32 uvloop + aiohttp clients, which take about eight times
      wrk's CPU per request from the cores they share with the portal;
   b. the same while 20 queries to the hung insurer are always in flight: healthy p50/p99
      (target p99 <= 150 ms) and the slowest hung answer (target <= 5.0 s, unable_to_verify);
   c. a batch of ``--batch`` vehicles (default 10,000) as consecutive requests of 1,000:
      total time (target <= 60 s);
   d. the insurer's own load: the same 32 clients (wrk, ``bench/soap_wrk.lua``) send the
      SOAP requests the portal sends, for the same vehicles, straight to ``olv soap serve``
      for ``--duration`` seconds: its throughput, p99 and CPU per request;
   e. the same load on both: ``--rate`` requests a second (default SPEC's 300) offered to the
      portal and the same rate of the insurer's requests straight to the insurer, each for
      ``--duration`` seconds in all, in an open loop (``bench/open_loop.py``: every request
      timed from when it was due), in ``--windows`` turns (portal, insurer, portal, …) so
      that both meet the machine's slow and fast phases alike: p50/p99 of each;
4. stops both servers and prints a table (and ``--json FILE`` for the record).

The portal is measured against the insurer service in the same run (issue 17): the portal's
CPU per verification (all its processes, from /proc) beside the insurer service's CPU per
request — both while it answers the portal's calls in phase a, and under its own load in
phase d — and the portal's p99 beside the insurer's own p99 at the same load (phase e).
Targets: portal CPU per verification <= 1.5x the insurer's CPU per request; portal p99 <= 3x
the insurer's p99. "The same load" is the same offered rate: at 32 closed-loop clients each
(phases a and d, also printed) each side runs at its own saturation, the insurer alone about
six times as fast, and the ratio of p99s is mostly that of throughputs (bench/RESULTS.md).

``--smoke`` shrinks everything (1,000 vehicles, 2-second phases, a batch of 2,000) to check
that the bench works; its figures mean nothing. The machine is printed with the figures:
the portal, the insurer's service and the load generator share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import open_loop
import procstat
import soap_corpus
import uvloop
import wrk
from scratch_db import DEFAULT_PG_URL
from servers import free_port
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bob_loader.load import load_files
from olv import db
from olv.bob import layout
from olv.iicmva import SOAP_ACTION, V0809
from portal import registry, soap_wire, tokens, users

HEALTHY_NAIC = "10001"
HUNG_NAIC = "30003"
TARGETS = {"rps": 300, "p99_ms": 100, "p99_hung_ms": 150, "hung_max_s": 5.0, "batch_s": 60}
# Issue 17: the portal against the insurer service, measured in the same run.
TARGET_CPU_RATIO = 1.5  # portal CPU per verification / insurer CPU per request
TARGET_P99_RATIO = 3.0  # portal p99 / insurer p99 at the same load


def vin(i: int) -> str:
    return f"BENCH{i:012d}"


def hung_vin(i: int) -> str:
    return f"HUNGV{i:012d}"


def olv(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "olv", *args],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )


@contextmanager
def state_database(kind: str, workdir: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'state.db'}"
        return
    name = f"olv_portal_bench_{os.getpid()}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def hung_socket() -> Iterator[int]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def server(
    command: list[str], env: dict[str, str], port: int, log: Path
) -> Iterator[tuple[str, int]]:
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[3:5]} exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[3:5]} did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield base, process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def prepare(
    state_url: str,
    insurer_env: dict[str, str],
    soap: str,
    hung_port: int,
    vehicles: int,
    clients: int,
    workdir: Path,
) -> list[str]:
    """Seed both databases; returns one API token per client."""
    today = datetime.now(UTC).date()
    start, end = (
        (today - timedelta(days=100)).isoformat(),
        (today + timedelta(days=265)).isoformat(),
    )
    csv_path = workdir / "policies.csv"
    with csv_path.open("w") as out:
        out.write(
            "naic,policy_number,policy_type,vin,effective_date,expiration_date,cancel_date,pending_review\n"
        )
        for i in range(vehicles):
            out.write(f"{HEALTHY_NAIC},P-{i},VS,{vin(i)},{start},{end},,\n")
    olv(insurer_env, "db", "upgrade")
    olv(insurer_env, "policies", "import", str(csv_path))

    db.upgrade(state_url)
    rows = [(HEALTHY_NAIC, f"P-{i}", vin(i)) for i in range(vehicles)]
    rows += [(HUNG_NAIC, f"H-{i}", hung_vin(i)) for i in range(20)]
    bob = workdir / "State 20261101.txt"
    with bob.open("w", newline="") as out:
        for naic, policy, v in rows:
            record = {
                "policy_type": "VS",
                "naic": naic,
                "policy_number": policy,
                "effective_date": "20240101",
                "vin": v,
            }
            out.write(layout.format_record(record) + "\r\n")
    engine = db.make_engine(state_url)
    try:
        outcome = load_files(engine, [bob], report_dir=workdir)[0]
        assert outcome.status == "accepted", outcome
        with db.transaction(engine) as session:
            registry.upsert(
                session,
                registry.InsurerInput(
                    HEALTHY_NAIC,
                    "Healthy",
                    f"{soap}/iicmva/00200809",
                    "00200809",
                    accepts_unknown=True,
                ),
            )
            registry.upsert(
                session,
                registry.InsurerInput(
                    HUNG_NAIC, "Hung", f"http://127.0.0.1:{hung_port}/iicmva/00200809", "00200809"
                ),
            )
            session.add(users.new_user("bench", "admin", None, password_hash="-"))
        made = []
        with db.transaction(engine) as session:
            for _ in range(clients):
                made.append(tokens.create(session, "bench", 1)[1])
        return made
    finally:
        engine.dispose()


# --- load generator (runs in its own process) -----------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU so far of a process and its descendants (Linux /proc)."""
    return procstat.cpu_seconds(procstat.family(pid))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def _loop(
    base: str,
    token: str,
    vins: list[str],
    until: float,
    out: list[float],
    verdicts: dict[str, int],
    seed: int,
    server_ms: list[float] | None = None,
) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {token}"}
    # aiohttp (C parser, one keep-alive connection per client): the generator shares the
    # cores with what it measures, so the less CPU it takes the truer the figures.
    async with aiohttp.ClientSession(
        base, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
    ) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            async with client.post("/api/v1/verify", json={"vin": rng.choice(vins)}) as response:
                body = await response.json()
                status = response.status
            out.append((time.perf_counter() - started) * 1000)
            key = body.get("verdict") if status == 200 else str(status)
            if server_ms is not None and "elapsed_ms" in body:
                server_ms.append(body["elapsed_ms"])  # from receipt, as the portal measures
            verdicts[key] = verdicts.get(key, 0) + 1


async def _python_clients(
    base: str, tokens_: list[str], vehicles: int, seconds: float
) -> dict[str, Any]:
    """One aiohttp client per token, verifying random vehicles for ``seconds``."""
    latencies: list[float] = []
    verdicts: dict[str, int] = {}
    vins = [vin(i) for i in range(vehicles)]
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(
        *(_loop(base, t, vins, until, latencies, verdicts, n) for n, t in enumerate(tokens_))
    )
    return {
        "requests": len(latencies),
        "rps": round(len(latencies) / (time.monotonic() - started), 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "verdicts": verdicts,
    }


async def _wrk_clients(
    base: str, tokens_: list[str], vehicles: int, seconds: float
) -> dict[str, Any]:
    """One wrk thread with a keep-alive connection per token, the tokens in turn."""
    with tempfile.NamedTemporaryFile("w", suffix=".tokens") as listing:
        listing.write("\n".join(tokens_) + "\n")
        listing.flush()
        args = (listing.name, str(vehicles))
        process = await asyncio.create_subprocess_exec(
            *wrk.command("portal_wrk.lua", base, len(tokens_), seconds, 1, *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
    summary = wrk.summary(out)
    if summary is None:
        raise RuntimeError(f"wrk gave no summary:\n{out.decode()}\n{err.decode()}")
    verdicts = {"confirmed": summary["confirmed"]}
    if summary["failures"]:
        verdicts["other"] = summary["failures"]
    return {
        "requests": summary["completed"],
        "rps": round(summary["completed"] / (summary["duration_us"] / 1e6), 1),
        "p50_ms": round(summary["p50"] / 1000, 1),
        "p99_ms": round(summary["p99"] / 1000, 1),
        "verdicts": verdicts,
        "socket_errors": summary["socket_errors"] + summary["timeouts"],
    }


async def _phase(
    base: str,
    tokens_: list[str],
    vehicles: int,
    seconds: float,
    hung: int,
    pids: tuple[int, int],
    kind: str,
) -> dict[str, Any]:
    """The healthy clients (``kind``: wrk or python) for ``seconds``, with ``hung`` queries to
    the hung insurer always in flight beside them (Python tasks either way)."""
    stuck: list[float] = []
    hung_verdicts: dict[str, int] = {}
    hung_server: list[float] = []
    until = time.monotonic() + seconds
    hung_vins = [hung_vin(i) for i in range(20)]
    hung_tasks = [
        _loop(
            base,
            tokens_[n % len(tokens_)],
            hung_vins,
            until,
            stuck,
            hung_verdicts,
            1000 + n,
            hung_server,
        )
        for n in range(hung)
    ]
    clients = _wrk_clients if kind == "wrk" else _python_clients
    portal_pid, soap_pid = pids
    cpu, soap_cpu = cpu_seconds(portal_pid), cpu_seconds(soap_pid)
    healthy, *_ = await asyncio.gather(clients(base, tokens_, vehicles, seconds), *hung_tasks)
    cpu, soap_cpu = cpu_seconds(portal_pid) - cpu, cpu_seconds(soap_pid) - soap_cpu
    answered = healthy["requests"] + len(stuck)
    return {
        "portal_cpu_ms_per_request": round(cpu * 1000 / max(1, answered), 3),
        # Every healthy verification is one call to the insurer (the hung ones go elsewhere).
        "insurer_cpu_ms_per_request": round(soap_cpu * 1000 / max(1, healthy["requests"]), 3),
        **healthy,
        "hung_requests": len(stuck),
        "hung_max_s": round(max(stuck) / 1000, 3) if stuck else None,
        "hung_max_server_s": round(max(hung_server) / 1000, 3) if hung_server else None,
        "hung_verdicts": hung_verdicts,
    }


async def _batch(base: str, token: str, vehicles: int, total: int) -> dict[str, Any]:
    rng = random.Random(7)
    items = [{"vin": vin(rng.randrange(vehicles))} for _ in range(total)]
    verdicts: dict[str, int] = {}
    started = time.monotonic()
    async with aiohttp.ClientSession(
        base,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=120),
        raise_for_status=True,
    ) as client:
        for at in range(0, total, 1000):
            items_ = {"items": items[at : at + 1000]}
            async with client.post("/api/v1/verify/batch", json=items_) as response:
                answer = await response.json()
            for result in answer["results"]:
                key = result.get("verdict", str(result.get("status")))
                verdicts[key] = verdicts.get(key, 0) + 1
    return {
        "vehicles": total,
        "seconds": round(time.monotonic() - started, 2),
        "verdicts": verdicts,
    }


def write_insurer_corpus(path: Path, vehicles: int, count: int = 2000) -> None:
    """The SOAP requests the portal sends the healthy insurer, for ``count`` random bench
    vehicles, in the corpus format of ``bench/soap_wrk.lua`` ("PATH LENGTH", body, newline)."""
    rng = random.Random(11)
    today = datetime.now(UTC).date()
    with path.open("wb") as out:
        for _ in range(count):
            i = rng.randrange(vehicles)
            ask = soap_wire.Ask(HEALTHY_NAIC, f"P-{i}", vin(i), today, "BIVER", "ID", "Idaho OLV")
            body = soap_wire.build_request(ask, V0809)
            out.write(f"/iicmva/{V0809} {len(body)}\n".encode() + body + b"\n")


async def _insurer_direct(
    soap: str, soap_pid: int, corpus: Path, clients: int, seconds: float
) -> dict[str, Any]:
    """``clients`` wrk connections straight to the insurer service, for ``seconds``."""
    cpu = cpu_seconds(soap_pid)
    process = await asyncio.create_subprocess_exec(
        *wrk.command("soap_wrk.lua", soap, clients, seconds, 1, str(corpus), SOAP_ACTION),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    cpu = cpu_seconds(soap_pid) - cpu
    summary = wrk.summary(out)
    if summary is None:
        raise RuntimeError(f"wrk gave no summary:\n{out.decode()}\n{err.decode()}")
    completed = summary["completed"]
    return {
        "requests": completed,
        "rps": round(completed / (summary["duration_us"] / 1e6), 1),
        "p50_ms": round(summary["p50"] / 1000, 1),
        "p99_ms": round(summary["p99"] / 1000, 1),
        "confirmed": summary["confirmed"],
        "failures": summary["failures"] + summary["socket_errors"] + summary["timeouts"],
        "cpu_ms_per_request": round(cpu * 1000 / max(1, completed), 3),
    }


async def _at_rate(
    base: str,
    soap: str,
    corpus: Path,
    tokens_: list[str],
    vehicles: int,
    rate: float,
    seconds: float,
    windows: int,
) -> dict[str, Any]:
    """The same offered rate to the portal and straight to the insurer, in turns (open loop)."""
    rng = random.Random(13)
    picks = [rng.randrange(vehicles) for _ in range(4096)]

    def verify(i: int) -> open_loop.Call:
        headers = {
            "Authorization": f"Bearer {tokens_[i % len(tokens_)]}",
            "Content-Type": "application/json",
        }
        return open_loop.Call(
            "/api/v1/verify", b'{"vin": "%s"}' % vin(picks[i % 4096]).encode(), headers
        )

    soap_calls = soap_corpus.read_corpus(corpus)
    soap_headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": f'"{SOAP_ACTION}"'}

    def ask(i: int) -> open_loop.Call:
        where, body = soap_calls[i % len(soap_calls)]
        return open_loop.Call(where, body, soap_headers)

    portal, insurer = await open_loop.interleaved(
        [
            open_loop.Target(
                base, verify, lambda status, body: status == 200 and b'"confirmed"' in body
            ),
            open_loop.Target(
                soap, ask, lambda status, body: status == 200 and b">Confirmed<" in body
            ),
        ],
        rate,
        seconds,
        windows,
    )
    return {"portal": portal.as_dict(), "insurer": insurer.as_dict(), "windows": windows}


def loadgen(
    base: str,
    pids: tuple[int, int],
    soap: str,
    corpus: Path,
    tokens_: list[str],
    vehicles: int,
    seconds: float,
    batch: int,
    kind: str,
    rate: float,
    windows: int,
    results: Any,
) -> None:
    async def run() -> dict[str, Any]:
        await _phase(base, tokens_, vehicles, min(3.0, seconds), 0, pids, kind)  # warm-up
        figures = {
            "healthy": await _phase(base, tokens_, vehicles, seconds, 0, pids, kind),
            "with_hung": await _phase(base, tokens_, vehicles, max(seconds, 6.0), 20, pids, kind),
            "batch": await _batch(base, tokens_[0], vehicles, batch),
        }
        if shutil.which("wrk"):
            figures["insurer"] = await _insurer_direct(soap, pids[1], corpus, len(tokens_), seconds)
        figures["at_rate"] = await _at_rate(
            base, soap, corpus, tokens_, vehicles, rate, seconds, windows
        )
        return figures

    results.put(uvloop.run(run()))


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--pg-url", default=os.environ.get("OLV_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--vehicles", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--portal-workers", type=int, default=1, help="OLV_PORTAL_WORKERS")
    parser.add_argument(
        "--soap-workers", type=int, help="the insurer's olv soap serve --workers (its default)"
    )
    parser.add_argument(
        "--loadgen",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="the healthy clients: wrk (C, the default where installed) or Python (aiohttp)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=float(TARGETS["rps"]),
        help="phase e's offered rate, to the portal and then to the insurer alone"
        " (default: SPEC's 300 verifications a second)",
    )
    parser.add_argument(
        "--windows",
        type=int,
        default=5,
        help="phase e's turns: each side gets --duration seconds in this many windows",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run: checks the bench works")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.vehicles, args.batch = 2.0, 1000, 2000

    with tempfile.TemporaryDirectory(prefix="olv-portal-bench-") as tmp:
        workdir = Path(tmp)
        insurer_env = {"OLV_DATABASE_URL": f"sqlite:///{workdir / 'insurer.db'}"}
        with state_database(args.db, workdir, args.pg_url) as state_url, hung_socket() as hung_port:
            soap_port, portal_port = free_port(), free_port()
            soap_cmd = [sys.executable, "-m", "olv", "soap", "serve", "--port", str(soap_port)]
            if args.soap_workers:
                soap_cmd += ["--workers", str(args.soap_workers)]
            portal_cmd = [
                sys.executable,
                "-m",
                "olv",
                "portal",
                "serve",
                "--port",
                str(portal_port),
            ]
            portal_env = {
                "OLV_DATABASE_URL": state_url,
                "OLV_PORTAL_TOKEN_RATE_PER_MINUTE": "10000000",
                "OLV_PORTAL_WORKERS": str(args.portal_workers),
                "OLV_PORTAL_SECRET_KEY": secrets.token_urlsafe(32),
            }
            soap_base = f"http://127.0.0.1:{soap_port}"
            tokens_ = prepare(
                state_url, insurer_env, soap_base, hung_port, args.vehicles, args.clients, workdir
            )
            corpus = workdir / "insurer-requests.txt"
            write_insurer_corpus(corpus, args.vehicles)
            with (
                server(soap_cmd, insurer_env, soap_port, workdir / "soap.log") as (_, soap_pid),
                server(portal_cmd, portal_env, portal_port, workdir / "portal.log") as (
                    portal,
                    portal_pid,
                ),
            ):
                queue: Any = multiprocessing.get_context("spawn").Queue()
                process = multiprocessing.get_context("spawn").Process(
                    target=loadgen,
                    args=(
                        portal,
                        (portal_pid, soap_pid),
                        soap_base,
                        corpus,
                        tokens_,
                        args.vehicles,
                        args.duration,
                        args.batch,
                        args.loadgen,
                        args.rate,
                        args.windows,
                        queue,
                    ),
                )
                process.start()
                figures = queue.get(timeout=args.duration * 4 + 600)
                process.join(30)

    figures["clients"] = args.clients
    figures["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "db": args.db,
        "portal_workers": args.portal_workers,
        "loadgen": args.loadgen,
        "soap_workers": args.soap_workers or os.cpu_count(),
        "smoke": args.smoke,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "calibration_ms": procstat.calibration_ms(),
    }
    h, w, b = figures["healthy"], figures["with_hung"], figures["batch"]
    smoke = ", SMOKE: figures mean nothing" if args.smoke else ""
    lines = [
        f"portal bench ({args.db}, {args.clients} clients, {args.portal_workers} portal"
        f" worker(s), insurer {args.soap_workers or 'default'} worker(s),"
        f" {os.cpu_count()} cores, {args.loadgen} load generator,"
        f" CPU calibration {figures['machine']['calibration_ms']} ms{smoke})",
        f"  healthy:      {h['rps']:>7}/s  p50 {h['p50_ms']} ms  p99 {h['p99_ms']} ms"
        f"  (target >= {TARGETS['rps']}/s, p99 <= {TARGETS['p99_ms']} ms)  {h['verdicts']}",
        f"  20 hung:      {w['rps']:>7}/s  p50 {w['p50_ms']} ms  p99 {w['p99_ms']} ms"
        f"  (target p99 <= {TARGETS['p99_hung_ms']} ms)",
        f"  hung answers: {w['hung_requests']} answered, slowest {w['hung_max_s']} s"
        f" ({w['hung_max_server_s']} s from receipt)"
        f"  (target <= {TARGETS['hung_max_s']} s)  {w['hung_verdicts']}",
        f"  portal CPU:   {h['portal_cpu_ms_per_request']} ms per verification"
        f" ({w['portal_cpu_ms_per_request']} ms with hung queries)",
        f"  batch:        {b['vehicles']} vehicles in {b['seconds']} s"
        f"  (target <= {TARGETS['batch_s']} s)  {b['verdicts']}",
        *_against_insurer(figures),
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _against_insurer(figures: dict[str, Any]) -> list[str]:
    """The portal beside the insurer service, measured in this run (issue 17's ratios)."""
    h = figures["healthy"]
    portal_cpu, insurer_cpu = h["portal_cpu_ms_per_request"], h["insurer_cpu_ms_per_request"]
    cpu_ratio = portal_cpu / insurer_cpu if insurer_cpu else float("inf")
    lines = [
        f"  insurer CPU:  {insurer_cpu} ms per request while answering the portal's calls"
        f" -> portal/insurer {cpu_ratio:.2f}x (target <= {TARGET_CPU_RATIO:g}x)"
        f" {'met' if cpu_ratio <= TARGET_CPU_RATIO else 'NOT MET'}",
    ]
    insurer = figures.get("insurer")
    if insurer is None:
        return [*lines, "  insurer alone: not measured (needs wrk)"]
    direct_ratio = (
        portal_cpu / insurer["cpu_ms_per_request"] if insurer["requests"] else float("inf")
    )
    p99_ratio = h["p99_ms"] / insurer["p99_ms"] if insurer["p99_ms"] else float("inf")
    return [*lines, *_closed_loop(figures, direct_ratio, p99_ratio), *_same_rate(figures)]


def _closed_loop(figures: dict[str, Any], direct_ratio: float, p99_ratio: float) -> list[str]:
    h, insurer = figures["healthy"], figures["insurer"]
    return [
        f"  insurer alone ({figures['clients']} clients, wrk, the portal's requests):"
        f" {insurer['rps']}/s  p50 {insurer['p50_ms']} ms  p99 {insurer['p99_ms']} ms"
        f"  CPU {insurer['cpu_ms_per_request']} ms/request  failures {insurer['failures']}",
        f"  portal CPU per verification / insurer CPU per request under its own load:"
        f" {direct_ratio:.2f}x",
        f"  closed loop, {figures['clients']} clients each (each side at its own saturation):"
        f" portal p99 / insurer p99 {h['p99_ms']} / {insurer['p99_ms']} ms = {p99_ratio:.2f}x",
    ]


def _same_rate(figures: dict[str, Any]) -> list[str]:
    """Issue 17's p99 ratio: both offered the same rate (README: "the same load")."""
    portal, insurer = figures["at_rate"]["portal"], figures["at_rate"]["insurer"]
    ratio = portal["p99_ms"] / insurer["p99_ms"] if insurer["p99_ms"] else float("inf")
    return [
        *(
            f"  {who} at {side['offered_rps']:g}/s offered (open loop): p50 {side['p50_ms']} ms"
            f"  p99 {side['p99_ms']} ms  max {side['max_ms']} ms  failures {side['failures']}"
            for who, side in (("portal      ", portal), ("insurer alone", insurer))
        ),
        f"  portal p99 / insurer p99 at the same offered rate"
        f" ({figures['at_rate']['windows']} windows each, in turns): {portal['p99_ms']} /"
        f" {insurer['p99_ms']} ms = {ratio:.2f}x (target <= {TARGET_P99_RATIO:g}x)"
        f" {'met' if ratio <= TARGET_P99_RATIO else 'NOT MET'}",
    ]


if __name__ == "__main__":
    sys.exit(main())
