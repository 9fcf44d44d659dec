"""SOAP service benchmark (SPEC §4): throughput and latency of ``olv soap serve``.

    python bench/soap_bench.py [--db sqlite|postgresql] [--duration S] [--policies N]

What it does, in one run:

1. creates a fresh database (a temporary SQLite file, or a PostgreSQL database it creates and
   drops), migrates it (``olv db upgrade``) and loads N policies (default 100,000) with
   ``olv policies import``, as an insurer loads its store, from a generated CSV: four NAICs,
   realistic policy numbers and check-digit-valid VINs, some multi-vehicle, fleet, cancelled
   and pending-review policies (``bench/soap_corpus.py``);
2. starts ``olv soap serve`` (default settings, the worker count given explicitly) on a free
   loopback port, and beside it the floor (``bench/soap_floor.py``: lxml + dict on the
   service's own uvicorn stack, httptools and uvloop, same worker layout and count) twice: on
   uvicorn's own httptools protocol (SPEC §4's bare uvicorn worker) and on the service's
   protocol class (its writes held to the end of the loop's turn);
3. drives them with keep-alive clients (1, 8, 32 connections; a warm-up first) from a
   separate load-generator process, rotating over pre-generated requests (mostly confirmed
   hits on random policies; unknown keys, VIN-only searches, wrong VINs, cancelled policies,
   both IICMVA versions and all three endpoints); every answer must be HTTP 200 with a
   ResponseCode element. The three take turns (``--rounds`` windows each of ``--duration``
   seconds in all: service, floor, floor, service, …), so that a phase of the shared machine
   falls on all of them alike; each one's figures are over its windows (percentiles: the
   median of the windows'), and the ratios service/floor are printed against each floor;
4. stops the servers with SIGTERM and compares the service's audit rows with the requests
   sent to it;
5. runs the same messages through ``SoapApplication`` in-process without HTTP (one thread)
   and checks its audit rows too.

Reading the figures: every run reports the CPU it saw, in cores: the server's processes, the
PostgreSQL backends of the benchmark database, the load generator, and "other" (everything
else on the machine). "server CPU ms/req" is the least noisy figure on a shared or virtual
machine. Before each run the bench waits (``--quiet-wait``, up to 60 s) for other work to stop.
With 32 closed-loop clients, mean latency is 32 / throughput (Little's law): p99 <= 20 ms
needs both throughput well above 3,000 req/s and a narrow latency distribution.

The exit code is 0 when every request was answered and audited, whether or not the targets
were met (the report says which were); 1 otherwise.

Requirements:
  * the project installed in the running interpreter (``pip install -e .``);
  * ``wrk`` for the load generator (Debian/Ubuntu: ``apt-get install wrk``). Without it, pass
    ``--loadgen python`` for a multi-process asyncio generator (weaker: it needs more CPU per
    request and so takes more of the 2 cores from the server);
  * ``py-spy`` only for ``--profile DIR`` (``pip install py-spy``), which samples the server's
    workers during an extra 32-client run and splits the time by layer;
  * for ``--db postgresql``: a server reachable with ``--pg-url`` (default
    ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, or ``OLV_BENCH_PG_URL``) by a
    role that may create databases.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
from in_process import run_in_process
from loadgen import LoadGenerator, Run
from procstat import machine_summary
from scratch_db import DEFAULT_PG_URL, analyze, count_rows, database_name, fresh_database, olv
from servers import Server, start_server
from soap_corpus import Corpus, generate_corpus, generate_policies, write_corpus, write_policy_csv
from soap_profile import Profile, print_profile, profile_server

from service.server import default_workers

FLOOR_SCRIPT = Path(__file__).resolve().parent / "soap_floor.py"
# SPEC §4, "from now on": at 32 clients, on SQLite and on PostgreSQL.
TARGET_CLIENTS = 32
TARGET_RPS = 3000
TARGET_P99_MS = 20.0
TARGET_FLOOR_FACTOR = 3.5
# SPEC §4 and issue 17, each measured against the floor in the same run.
TARGET_RATIO_RPS = 0.33  # throughput, service / floor, at least
TARGET_RATIO_P99 = 3.0  # p99, service / floor, at most
TARGET_RATIO_CPU = 3.0  # server CPU per request, service / floor, at most


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark olv soap serve against SPEC §4.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Requirements:", 1)[1],
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--duration",
        type=float,
        default=12.0,
        help="seconds of load for each server at each concurrency, in --rounds windows",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="windows per server and concurrency, taken in turns: service, floors, service, …",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load")
    parser.add_argument("--policies", type=int, default=100_000)
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrencies")
    parser.add_argument("--requests", type=int, default=20_000, help="distinct request bodies")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes of the service and of the floor (0: the service's default, "
        "one per core)",
    )
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    parser.add_argument(
        "--loadgen-threads", type=int, default=1, help="wrk threads / generator processes"
    )
    parser.add_argument(
        "--floor-clients", default="32", help="concurrencies for the floor ('' to skip it)"
    )
    parser.add_argument(
        "--in-process-seconds", type=float, default=8.0, help="no-HTTP run length (0 to skip)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="before each run wait up to this many seconds for other work on the machine "
        "to stop (0: do not wait); the 'other CPU' column shows what still ran",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the server into this folder")
    parser.add_argument("--pg-url", default=os.environ.get("OLV_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--seed", type=int, default=20261122)
    return parser.parse_args()


def _counts(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


@dataclass
class Results:
    ours: list[Run]
    floor: list[Run]  # SPEC §4's floor: a bare uvicorn worker
    floor_on_our_protocol: list[Run]  # the same app on the service's protocol class
    in_process: Run | None
    profile: Profile | None
    audit_rows: int
    requests_sent: int
    in_process_audit_rows: int
    floor_banner: str

    def floors(self) -> list[tuple[str, list[Run]]]:
        return [
            ("bare uvicorn floor (SPEC §4)", self.floor),
            ("floor on the service's protocol", self.floor_on_our_protocol),
        ]

    @property
    def audit_ok(self) -> bool:
        ip = self.in_process
        in_process_ok = ip is None or self.in_process_audit_rows == ip.sent
        return self.audit_rows == self.requests_sent and in_process_ok

    @property
    def failures(self) -> int:
        extra = [self.in_process] if self.in_process else []
        runs = [*self.ours, *self.floor, *self.floor_on_our_protocol, *extra]
        return sum(r.failures + r.socket_errors for r in runs)


def main() -> int:
    args = parse_args()
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        sys.exit(
            "wrk is not installed. Install it (Debian/Ubuntu: apt-get install wrk) or run with "
            "--loadgen python (a weaker, CPU-hungrier generator)."
        )
    workers = args.workers or default_workers()
    info = machine_summary()
    print(
        f"machine: {info['cores']} cores, {info['memory']}, {info['cpu']}; "
        f"Python {info['python']}; {info['date']}; code {info['revision']}; "
        f"CPU calibration {info['calibration']} (procstat.calibration_ms, lower is faster)",
        flush=True,
    )
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="olv-soap-bench-"))
    try:
        corpus, policy_csv, corpus_file = prepare_data(args, workdir)
        with fresh_database(args.db, workdir, args.pg_url) as url:
            loadgen = LoadGenerator(
                args.loadgen, corpus_file, args.loadgen_threads, args.quiet_wait, database_name(url)
            )
            results = measure(args, url, workers, corpus, policy_csv, loadgen, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, workers, corpus, results)
    print(f"\ntotal bench time {time.monotonic() - started:.0f} s")
    if args.json:
        write_json(args, workers, info, loadgen, corpus, results)
    return 0 if results.audit_ok and results.failures == 0 else 1


def prepare_data(args: argparse.Namespace, workdir: Path) -> tuple[Corpus, Path, Path]:
    rng = random.Random(args.seed)
    today = date.today()  # the service answers for "today" in UTC by default
    policies = generate_policies(args.policies, today, rng)
    policy_csv = workdir / "policies.csv"
    write_policy_csv(policy_csv, policies, today, args.seed)
    corpus = generate_corpus(policies, today, args.requests, rng)
    corpus_file = workdir / "requests.txt"
    write_corpus(corpus_file, corpus)
    print(
        f"data: {args.policies:,} policies, {len(corpus.requests):,} distinct requests "
        f"({100 * corpus.expected_share:.1f} % expected Confirmed)",
        flush=True,
    )
    return corpus, policy_csv, corpus_file


def measure(
    args: argparse.Namespace,
    url: str,
    workers: int,
    corpus: Corpus,
    policy_csv: Path,
    loadgen: LoadGenerator,
    workdir: Path,
) -> Results:
    env = {**os.environ, "OLV_DATABASE_URL": url}
    env.pop("OLV_NAICS", None)  # every NAIC of the generated book is ours
    olv("db", "upgrade", env=env)
    t_import = time.monotonic()
    olv("policies", "import", str(policy_csv), env=env)
    analyze(url)
    print(
        f"database: {args.db}, migrated; policies loaded (olv policies import) in "
        f"{time.monotonic() - t_import:.1f} s",
        flush=True,
    )
    print(f"load generator: {loadgen.describe()}", flush=True)
    audit_before = count_rows(url, "audit_record")

    serve = [sys.executable, "-m", "olv", "soap", "serve", "--host", "127.0.0.1"]
    server = start_server("soap", [*serve, "--workers", str(workers)], env, workdir)
    floors: list[Server] = []
    banner = ""
    profile: Profile | None = None
    ours_clients, floor_clients = _counts(args.clients), _counts(args.floor_clients)
    try:
        if floor_clients:
            floors = [floor_server(workers, policy_csv, env, workdir, s) for s in FLOOR_STACKS]
            banner = "\n".join(f.log.read_text().strip().splitlines()[0] for f in floors)
        ours_sent = loadgen.run(server, max(ours_clients), args.warmup, "warm-up").sent
        for each in floors:
            loadgen.run(each, max(floor_clients), args.warmup, "warm-up")
        calls_before = shared_reads(server)
        # Each server with its label and concurrencies; the service first.
        turns = [
            (f"ours ({args.db})", server, ours_clients),
            *(
                (f"floor (lxml + dict, {stack})", each, floor_clients)
                for stack, each in zip(FLOOR_STACKS[: len(floors)], floors, strict=True)
            ),
        ]
        windows: dict[tuple[int, int], list[Run]] = {}
        window = max(1.0, round(args.duration / args.rounds))
        for _ in range(args.rounds):
            # In turns, so that the service and the floors meet the machine's phases alike.
            for k, (label, each, clients) in enumerate(turns):
                for n in clients:
                    run = loadgen.run(each, n, window, label, SETTLE_SECONDS)
                    windows.setdefault((k, n), []).append(run)
                    ours_sent += run.sent if each is server else 0
        calls, decided = (a - b for a, b in zip(shared_reads(server), calls_before, strict=True))
        print(
            f"database calls: {calls:,.0f} for {decided:,.0f} requests "
            f"({decided / calls if calls else 0:.1f} requests per call: those of one loop turn)",
            flush=True,
        )
        if args.profile:
            profiled, profile = profile_server(
                server, loadgen, TARGET_CLIENTS, args.duration, args.profile
            )
            _show(profiled)
            ours_sent += profiled.sent
    finally:
        for each in floors:
            each.stop()
        code = server.stop()
    ours = [_show(combined(windows[0, n])) for n in ours_clients]
    floor = [_show(combined(windows[1, n])) for n in floor_clients] if floors else []
    floor_on_our_protocol = (
        [_show(combined(windows[2, n])) for n in floor_clients] if floors else []
    )
    log_lines = server.log.read_text(errors="replace").splitlines()[1:]  # after the banner
    if log_lines:
        print(f"server log ({len(log_lines)} lines), last ones:", *log_lines[-10:], sep="\n  ")
    # An inline read cut by the deadline gate's watchdog: on a healthy database, a false alarm.
    cuts = sum("cut, asked on a thread" in line for line in log_lines)
    print(f"deadline cuts of inline database calls: {cuts}", flush=True)
    audit_rows = count_rows(url, "audit_record") - audit_before
    print(
        f"audit: {audit_rows:,} rows written, {ours_sent:,} requests sent "
        f"(warm-up included); server exit code {code} -> "
        f"{'MATCH' if audit_rows == ours_sent else 'MISMATCH'}",
        flush=True,
    )

    in_process: Run | None = None
    in_process_audit = 0
    if args.in_process_seconds > 0:
        before = count_rows(url, "audit_record")
        in_process = _show(
            run_in_process(url, corpus, args.in_process_seconds, args.quiet_wait, loadgen.database)
        )
        in_process_audit = count_rows(url, "audit_record") - before
    return Results(
        ours,
        floor,
        floor_on_our_protocol,
        in_process,
        profile,
        audit_rows,
        ours_sent,
        in_process_audit,
        banner,
    )


def shared_reads(server: Server) -> tuple[float, float]:
    """The service's database calls so far and the requests they decided, all workers
    (``olv_soap_db_batch_requests`` from /metrics, which loopback may read)."""
    text = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).text
    found = dict(re.findall(r"^olv_soap_db_batch_requests_(count|sum) (\S+)$", text, re.M))
    return float(found.get("count", 0)), float(found.get("sum", 0))


# The service writes its audit rows every 0.5 s (OLV_AUDIT_FLUSH_SECONDS): a window's CPU is
# read once the rows of its requests are written, not while another server has the load.
SETTLE_SECONDS = 0.8
FLOOR_STACKS = ("bare", "service")  # uvicorn's own protocol (SPEC §4), the service's


def floor_server(
    workers: int, policy_csv: Path, env: dict[str, str], workdir: Path, stack: str
) -> Server:
    command = [sys.executable, str(FLOOR_SCRIPT), "--host", "127.0.0.1", "--stack", stack]
    command += ["--workers", str(workers), "--policies", str(policy_csv)]
    return start_server(f"floor-{stack}", command, env, workdir)


def combined(windows: list[Run]) -> Run:
    """One server's windows at one concurrency as one run: throughput and CPU over them all,
    each latency percentile the median of the windows' (wrk reports percentiles, not the
    latencies themselves)."""

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    seconds = sum(r.seconds for r in windows)

    def share(field: str) -> float:  # cores busy, weighted by each window's length
        return sum(getattr(r, field) * r.seconds for r in windows) / seconds if seconds else 0.0

    first = windows[0]
    return Run(
        label=first.label,
        clients=first.clients,
        sent=sum(r.sent for r in windows),
        completed=sum(r.completed for r in windows),
        seconds=seconds,
        failures=sum(r.failures for r in windows),
        confirmed=sum(r.confirmed for r in windows),
        socket_errors=sum(r.socket_errors for r in windows),
        p50_ms=median([r.p50_ms for r in windows]),
        p95_ms=median([r.p95_ms for r in windows]),
        p99_ms=median([r.p99_ms for r in windows]),
        max_ms=max(r.max_ms for r in windows),
        server_cpu=share("server_cpu"),
        db_cpu=share("db_cpu"),
        loadgen_cpu=share("loadgen_cpu"),
        machine_cpu=share("machine_cpu"),
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def table(runs: list[Run]) -> str:
    lines = [
        "| run | clients | req/s | p50 ms | p95 ms | p99 ms | max ms | failures | "
        "server CPU | server CPU ms/req | PG backends CPU | load-gen CPU | other CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {r.clients} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.max_ms:.1f} | {r.failures + r.socket_errors} | "
            f"{r.server_cpu:.2f} | {r.cpu_ms_per_request:.3f} | {r.db_cpu:.2f} | "
            f"{r.loadgen_cpu:.2f} | {r.other_cpu:.2f} |"
        )
    return "\n".join(lines)


def _show(run: Run) -> Run:
    print(table([run]).splitlines()[-1], flush=True)
    return run


def _at(runs: list[Run], clients: int) -> Run | None:
    return next((r for r in runs if r.clients == clients), None)


def _pairs(ours_runs: list[Run], floor_runs: list[Run]) -> list[tuple[Run, Run]]:
    """(ours, floor) at every concurrency both were measured at."""
    pairs = [(ours, _at(floor_runs, ours.clients)) for ours in ours_runs]
    return [(o, f) for o, f in pairs if f is not None and f.rps and f.p99_ms]


def _verdict(ok: bool | None) -> str:
    return "no measurement" if ok is None else "met" if ok else "NOT MET"


def report(args: argparse.Namespace, workers: int, corpus: Corpus, results: Results) -> None:
    extra = [results.in_process] if results.in_process else []
    print(f"\n## {args.db}: {workers} workers, {args.duration:g} s per run")
    print(table([*results.ours, *results.floor, *results.floor_on_our_protocol, *extra]))
    print()
    if results.floor_banner:
        print(results.floor_banner)
    for name, floor_runs in results.floors():
        for ours, floor in _pairs(results.ours, floor_runs):
            print(ratio_line(name, ours, floor))
    if results.in_process is not None:
        ip = results.in_process
        print(
            f"no-HTTP in-process: {ip.rps:,.0f} req/s on one thread "
            f"(p50 {ip.p50_ms:.2f} ms, p99 {ip.p99_ms:.2f} ms); "
            f"audit rows {results.in_process_audit_rows:,} for {ip.sent:,} calls"
        )
    if results.ours:
        top = results.ours[-1]
        confirmed = top.confirmed / max(1, top.completed)
        print(
            f"answers at {top.clients} clients: {100 * confirmed:.1f} % Confirmed "
            f"(corpus expects {100 * corpus.expected_share:.1f} %)"
        )
    print(targets(args.db, results))
    if results.profile:
        print_profile(results.profile, TARGET_CLIENTS)


def ratio_line(name: str, ours: Run, floor: Run) -> str:
    """Service over ``floor`` at one concurrency, beside the ratio targets (SPEC §4)."""
    throughput = ours.rps / floor.rps
    p99 = ours.p99_ms / floor.p99_ms
    cpu = ours.cpu_ms_per_request / floor.cpu_ms_per_request if floor.cpu_ms_per_request else 0
    return (
        f"service / {name} at {ours.clients} clients: throughput {ours.rps:,.0f} / "
        f"{floor.rps:,.0f} req/s = {throughput:.2f} (target >= {TARGET_RATIO_RPS:g}: "
        f"{_verdict(throughput >= TARGET_RATIO_RPS)}); p99 {ours.p99_ms:.2f} / "
        f"{floor.p99_ms:.2f} ms = {p99:.2f}x (target <= {TARGET_RATIO_P99:g}x: "
        f"{_verdict(p99 <= TARGET_RATIO_P99)}); server CPU {ours.cpu_ms_per_request:.3f} / "
        f"{floor.cpu_ms_per_request:.3f} ms/req = {cpu:.2f}x (target <= {TARGET_RATIO_CPU:g}x: "
        f"{_verdict(cpu <= TARGET_RATIO_CPU)})"
    )


def targets(db: str, results: Results) -> str:
    """SPEC §4's verdict, target by target, at the concurrency it is stated for."""
    ours = _at(results.ours, TARGET_CLIENTS)
    if ours is None:
        return f"SPEC §4 targets are stated at {TARGET_CLIENTS} clients: no such run here"
    floor = _at(results.floor, TARGET_CLIENTS)
    rps_ok = ours.rps >= TARGET_RPS
    p99_ok = ours.p99_ms <= TARGET_P99_MS
    floor_ok = None if floor is None else floor.rps <= TARGET_FLOOR_FACTOR * ours.rps
    factor = ""
    if floor is not None:
        factor = f" ({floor.rps / ours.rps if ours.rps else float('inf'):.2f}x)"
    return (
        f"SPEC §4 at {TARGET_CLIENTS} clients on {db}: "
        f">= {TARGET_RPS:,} req/s {_verdict(rps_ok)} ({ours.rps:,.0f}); "
        f"p99 <= {TARGET_P99_MS:g} ms {_verdict(p99_ok)} ({ours.p99_ms:.2f}); "
        f"within {TARGET_FLOOR_FACTOR:g}x of the floor {_verdict(floor_ok)}{factor} -> "
        f"{'MET' if rps_ok and p99_ok and floor_ok else 'NOT MET'}"
    )


def write_json(
    args: argparse.Namespace,
    workers: int,
    info: dict[str, str],
    loadgen: LoadGenerator,
    corpus: Corpus,
    results: Results,
) -> None:
    ratios = {
        str(ours.clients): {"throughput": ours.rps / floor.rps, "p99": ours.p99_ms / floor.p99_ms}
        for ours, floor in _pairs(results.ours, results.floor)
    }
    document = {
        "machine": info,
        "db": args.db,
        "workers": workers,
        "loadgen": loadgen.describe(),
        "floor": results.floor_banner,
        "runs": [r.as_dict() for r in results.ours],
        "floor_runs": [r.as_dict() for r in results.floor],
        "floor_on_our_protocol_runs": [r.as_dict() for r in results.floor_on_our_protocol],
        "service_over_floor_by_clients": ratios,
        "in_process": results.in_process.as_dict() if results.in_process else None,
        "audit_rows": results.audit_rows,
        "requests_sent": results.requests_sent,
        "in_process_audit_rows": results.in_process_audit_rows,
        "mix": corpus.mix,
        "profile": results.profile.as_dict() if results.profile else None,
    }
    args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    sys.exit(main())
