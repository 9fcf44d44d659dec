"""SOAP service benchmark (SPEC §4): throughput and latency of ``olv soap serve``.

    python bench/soap_bench.py [--db sqlite|postgresql] [--duration S] [--policies N]

What it does, in one run:

1. creates a fresh database (a temporary SQLite file, or a PostgreSQL database it creates and
   drops), migrates it (``olv db upgrade``) and loads N policies (default 100,000) from a
   generated CSV: four NAICs, realistic policy numbers and check-digit-valid VINs, some
   multi-vehicle, fleet, cancelled and pending-review policies. The CSV is read by the
   project's own importer code and written with multi-row inserts (seconds);
   ``--loader cli`` uses ``olv policies import`` instead (about 4-5 minutes for 100,000);
2. starts ``olv soap serve`` (default workers and threads) on a free loopback port;
3. drives it with keep-alive clients (1, 8, 32 connections; a warm-up first) from a separate
   load-generator process, rotating over pre-generated requests (mostly confirmed hits on
   random policies; unknown keys, VIN-only searches, wrong VINs, cancelled policies, both
   IICMVA versions and all three endpoints); every answer must be HTTP 200 with a
   ResponseCode element;
4. stops the server with SIGTERM and compares the audit rows with the requests sent;
5. measures the floor (``bench/soap_floor.py``: bare uvicorn + lxml + dict, same workers) the
   same way and prints the ratios;
6. runs the same messages through ``SoapApplication`` in-process without HTTP (one thread)
   and checks its audit rows too.

Reading the figures: every run reports the CPU it saw, in cores: the server's processes, the
PostgreSQL backends of the benchmark database, the load generator, and "other" (everything
else on the machine). "server CPU ms/req" is the least noisy figure on a shared or virtual
machine. Before each run the bench waits (``--quiet-wait``, up to 60 s) for other work to stop.
With 32 closed-loop clients, mean latency is 32 / throughput (Little's law): p99 <= 25 ms
needs both throughput well above 2,000 req/s and a narrow latency distribution.

``--profile DIR`` adds a 32-client run under py-spy (``--gil``) and splits the time by layer;
``--what-if`` starts a modified server (e.g. without Spyne's forced gc.collect()) to size an
optimisation before anyone writes it: those runs are labelled and never the shipped service.

Requirements:
  * the project installed in the running interpreter (``pip install -e .``);
  * ``wrk`` for the load generator (Debian/Ubuntu: ``apt-get install wrk``). Without it, pass
    ``--loadgen python`` for a multi-process asyncio generator (weaker: it needs more CPU per
    request and so takes more of the 2 cores from the server);
  * ``uvicorn`` for the floor (``pip install uvicorn``);
  * ``py-spy`` only for ``--profile DIR`` (``pip install py-spy``), which samples the server's
    workers during an extra 32-client run and summarises where the time goes;
  * for ``--db postgresql``: a server reachable with ``--pg-url`` (default
    ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``, or ``OLV_BENCH_PG_URL``) by a
    role that may create databases.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import multiprocessing
import os
import platform
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "soap_wrk.lua"
FLOOR_SCRIPT = BENCH_DIR / "soap_floor.py"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TARGET_RPS = 2000
TARGET_P99_MS = 25.0
TARGET_FLOOR_FACTOR = 3.5

# --------------------------------------------------------------------------------------------
# Data: policies and requests
# --------------------------------------------------------------------------------------------

# NAIC -> (policy number pattern, share of the book)
NAICS = {
    "10111": ("PA-{n:010d}", 0.4),
    "20222": ("AUT {a} {n:06d} {b:02d}", 0.3),
    "30333": ("7{n:09d}", 0.2),
    "40444": ("CA{n:09d}-{y}", 0.1),
}
WMIS = ("1HG", "1FT", "1G1", "2T1", "3VW", "4T1", "5YJ", "JTD", "KMH", "WBA", "WVW", "1C4")
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
YEAR_CHARS = "ABCDEFGHJKLMNPRSTVWXY123456789"
_TRANSLIT = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
MAKES = (("HONDA", "ACCORD"), ("FORD", "F-150"), ("TOYOTA", "CAMRY"), ("TESLA", "MODEL S"))
REASONS_0809 = ("VEHREG", "REGREN", "ACC", "VIOL", "BIVER", "ACCV", "PIPVER")
REASONS_0510 = ("RegistrationofVehicle", "RegistrationRenewal", "TrafficViolation", "Accident")
STATES = ("ID", "AL", "TX", "NY", "CA", "WA")


def make_vin(rng: random.Random) -> str:
    """A 17-character VIN with a valid check digit (position 9)."""
    chars = list(
        rng.choice(WMIS)
        + "".join(rng.choice(VIN_CHARS) for _ in range(5))
        + "0"
        + rng.choice(YEAR_CHARS)
        + rng.choice(VIN_CHARS)
        + f"{rng.randrange(1_000_000):06d}"
    )
    total = sum(_TRANSLIT[c] * w for c, w in zip(chars, _WEIGHTS, strict=True))
    chars[8] = "X" if total % 11 == 10 else str(total % 11)
    return "".join(chars)


@dataclass
class BenchPolicy:
    naic: str
    number: str
    kind: str  # VS or NS
    vins: list[str]
    cancelled: bool = False
    pending: bool = False


@dataclass
class Corpus:
    requests: list[tuple[str, bytes]]  # (path, body)
    expected_confirmed: int
    mix: dict[str, int] = field(default_factory=dict)


def generate_policies(count: int, today: date, rng: random.Random) -> list[BenchPolicy]:
    policies = []
    naics = list(NAICS)
    weights = [share for _, share in NAICS.values()]
    serial = {naic: rng.randrange(10_000, 90_000) for naic in naics}
    for _ in range(count):
        naic = rng.choices(naics, weights)[0]
        serial[naic] += rng.randrange(1, 40)
        pattern = NAICS[naic][0]
        number = pattern.format(
            n=serial[naic], a=rng.choice("ABCDEFGH"), b=rng.randrange(1, 20), y=today.year
        )
        roll = rng.random()
        if roll < 0.01:
            policy = BenchPolicy(naic, number, "NS", [make_vin(rng) for _ in range(3)])
        else:
            vehicles = 2 if roll < 0.08 else 1
            policy = BenchPolicy(naic, number, "VS", [make_vin(rng) for _ in range(vehicles)])
        policy.cancelled = 0.01 <= roll < 0.04
        policy.pending = 0.04 <= roll < 0.045
        policies.append(policy)
    return policies


def write_policy_csv(path: Path, policies: list[BenchPolicy], today: date, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        from service.policy_import import CSV_COLUMNS

        writer.writerow(CSV_COLUMNS)
        for p in policies:
            effective = today - timedelta(days=rng.randrange(60, 700))
            expiration = today + timedelta(days=rng.randrange(30, 365))
            cancel = today - timedelta(days=rng.randrange(10, 40)) if p.cancelled else None
            # A fleet (NS) policy is verified at policy level: its vehicles are not listed.
            for vin in [""] if p.kind == "NS" else p.vins:
                writer.writerow(
                    [
                        p.naic,
                        p.number,
                        p.kind,
                        vin,
                        effective.isoformat(),
                        expiration.isoformat(),
                        cancel.isoformat() if cancel else "",
                        "Y" if p.pending else "N",
                    ]
                )


def _verification_date(day: date, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.6:
        return f"{day.isoformat()}T00:00:00"
    if style < 0.9:
        return f"{day.isoformat()}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00-06:00"
    return f"{day.isoformat()}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z"


def _vehicle(vin: str, rng: random.Random) -> str:
    extra = ""
    if rng.random() < 0.5:
        make, model = rng.choice(MAKES)
        extra = f"<Make>{make}</Make><Model>{model}</Model><Year>{rng.randrange(2005, 2026)}</Year>"
    return (
        f"<VehicleInformation><VehicleDetails><VIN>{vin}</VIN>{extra}"
        "</VehicleDetails></VehicleInformation>"
    )


def request_body(
    version: str, naic: str, key: str, vin: str, verification: str, rng: random.Random
) -> bytes:
    if version == "00200809":
        root_attrs = ' PublicationVersion="00200809" PublicationDate="2008-09-01"'
        key_element, reason = "PolicyKey", rng.choice(REASONS_0809)
    else:
        root_attrs, key_element, reason = "", "UniqueKey", rng.choice(REASONS_0510)
    officer = (
        "<Individual><ParsedName><GivenName>Maria</GivenName><Surname>Garcia</Surname>"
        "</ParsedName></Individual><Organization><Name>Ada County Sheriff</Name></Organization>"
    )
    if version == "00200809":
        requestor = rng.choice(
            (
                "<Organization><Name>Idaho Transportation Department</Name></Organization>",
                "<Organization><Name>State Police District 4</Name></Organization>",
                officer,
            )
        )
    else:  # 00200510 requires the Individual block in RequestorInformation
        requestor = officer
    tracking = f"<TrackingNumber>TS-{rng.randrange(10**8):08d}</TrackingNumber>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
 <soap:Body>
  <CoverageRequest xmlns="http://www.iicmva.com/CoverageVerification/"{root_attrs}>
   <RequestorInformation>{requestor}
    <ReasonDetails><ReasonCode>{reason}</ReasonCode>{tracking}</ReasonDetails>
   </RequestorInformation>
   <Detail>
    <PolicyInformation>
     <OrganizationDetails><NAIC>{naic}</NAIC></OrganizationDetails>
     <PolicyDetails>
      <VerificationDate>{verification}</VerificationDate>
      <{key_element}>{key}</{key_element}>
      <PolicyState>{rng.choice(STATES)}</PolicyState>
     </PolicyDetails>
    </PolicyInformation>
    {_vehicle(vin, rng)}
   </Detail>
  </CoverageRequest>
 </soap:Body>
</soap:Envelope>""".encode()


# (kind, share in %, endpoint, version, expected to confirm)
MIX = (
    ("confirmed 00200809", 78, "/iicmva/00200809", "00200809", True),
    ("confirmed 00200510", 5, "/iicmva/00200510", "00200510", True),
    ("confirmed, auto-detect endpoint", 4, "/iicmva", "00200809", True),
    ("VIN-only search (key UNKNOWN)", 3, "/iicmva/00200809", "00200809", True),
    ("unknown policy key", 4, "/iicmva/00200809", "00200809", False),
    ("VIN not on the policy", 3, "/iicmva/00200809", "00200809", False),
    ("cancelled policy", 3, "/iicmva/00200809", "00200809", False),
)


def generate_corpus(
    policies: list[BenchPolicy], today: date, size: int, rng: random.Random
) -> Corpus:
    plain = [p for p in policies if not p.cancelled and not p.pending]
    vehicle = [p for p in plain if p.kind == "VS"]
    cancelled = [p for p in policies if p.cancelled and p.kind == "VS"] or vehicle
    kinds = [m[0] for m in MIX]
    weights = [m[1] for m in MIX]
    spec = {m[0]: m for m in MIX}
    requests: list[tuple[str, bytes]] = []
    expected = 0
    mix: dict[str, int] = dict.fromkeys(kinds, 0)
    for _ in range(size):
        kind = rng.choices(kinds, weights)[0]
        _, _, path, version, confirms = spec[kind]
        day = today - timedelta(days=rng.randrange(0, 5))
        if kind == "VIN-only search (key UNKNOWN)":
            policy = rng.choice(vehicle)
            naic, key, vin = policy.naic, rng.choice(("UNKNOWN", "unknown")), policy.vins[0]
        elif kind == "unknown policy key":
            policy = rng.choice(plain)
            naic, key, vin = policy.naic, f"ZZ-{rng.randrange(10**9):09d}", make_vin(rng)
        elif kind == "VIN not on the policy":
            policy = rng.choice(vehicle)
            naic, key, vin = policy.naic, policy.number, make_vin(rng)
        elif kind == "cancelled policy":
            policy = rng.choice(cancelled)
            naic, key, vin = policy.naic, policy.number, policy.vins[0]
        else:
            policy = rng.choice(plain)
            naic, key, vin = policy.naic, policy.number, rng.choice(policy.vins)
        body = request_body(version, naic, key, vin, _verification_date(day, rng), rng)
        requests.append((path, body))
        mix[kind] += 1
        expected += confirms
    return Corpus(requests, expected, mix)


def write_corpus(path: Path, corpus: Corpus) -> None:
    with path.open("wb") as handle:
        for endpoint, body in corpus.requests:
            handle.write(f"{endpoint} {len(body)}\n".encode() + body + b"\n")


# --------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------


@contextmanager
def fresh_database(kind: str, workdir: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(pg_url)
    name = f"olv_soap_bench_{os.getpid()}_{random.randrange(10**6)}"
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        sys.exit(f"cannot create a PostgreSQL database through {admin!r}: {exc}")
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bulk_load(url: str, policy_csv: Path) -> None:
    """Load the CSV into an empty store with multi-row inserts.

    Rows are read and validated by the project's own CSV reader (``policy_import.rows_of``:
    the same normalization as ``olv policies import``), then written in bulk: the CLI import
    upserts policy by policy and needs minutes for 100,000 policies.
    """
    from sqlalchemy import insert, text

    from olv import db
    from service.models import Coverage, Policy
    from service.policy_import import ImportResult, rows_of

    result = ImportResult(policy_csv)
    policies: dict[tuple[str, str], dict[str, Any]] = {}
    coverages: list[dict[str, Any]] = []
    for row in rows_of(policy_csv, result):
        policy = policies.get((row.naic, row.policy_key))
        if policy is None:
            policy = {
                "id": len(policies) + 1,
                "naic": row.naic,
                "policy_number": row.policy_number,
                "policy_key": row.policy_key,
                "policy_type": row.policy_type,
                "pending_review": row.pending_review,
            }
            policies[(row.naic, row.policy_key)] = policy
        policy["pending_review"] = policy["pending_review"] or row.pending_review
        coverages.append(
            {
                "id": len(coverages) + 1,
                "policy_id": policy["id"],
                "naic": row.naic,
                "vin": row.vin or None,
                "effective_date": row.effective,
                "expiration_date": row.expiration,
                "cancel_date": row.cancellation,
            }
        )
    if result.errors:
        sys.exit(f"generated CSV has bad rows: {result.errors[:3]}")
    engine = db.make_engine(url)
    try:
        with engine.begin() as conn:
            for table, rows in (
                (Policy.__table__, list(policies.values())),
                (Coverage.__table__, coverages),
            ):
                for start in range(0, len(rows), 5000):
                    conn.execute(insert(table), rows[start : start + 5000])
            if not db.is_sqlite(url):
                for name in ("policy", "coverage"):
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                            f"(SELECT max(id) FROM {name}))"
                        )
                    )
    finally:
        engine.dispose()


def analyze(url: str) -> None:
    """Planner statistics, as a production store would have them after its first load."""
    from sqlalchemy import text

    from olv import db

    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            if not db.is_sqlite(url):
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(text("ANALYZE"))
            conn.commit()
    finally:
        engine.dispose()


def olv(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "olv", *args], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"olv {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def count_rows(url: str, table: str) -> int:
    from sqlalchemy import text

    from olv import db

    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------
# Processes and CPU accounting
# --------------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds([pid]) for pid in pids}


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with suppress(OSError), open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to ``max_wait`` s) until other work leaves the cores idle; returns the load.

    The load is the busy share of all cores over one second; a benchmark on a shared
    machine is only meaningful while nothing else runs.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, all0 = machine_busy()
        time.sleep(1.0)
        busy1, all1 = machine_busy()
        load = (busy1 - busy0) / max(1, all1 - all0)
        if load <= threshold or time.monotonic() >= deadline:
            if load > threshold:
                print(
                    f"  warning: the machine is {100 * load:.0f} % busy with other work", flush=True
                )
            return load
        time.sleep(1.0)


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_server(name: str, command: list[str], env: dict[str, str], workdir: Path) -> Server:
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    server = Server(name, process, port, log)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            sys.exit(f"{name} exited early:\n{log.read_text()}")
        if _healthy(port):
            break
        if time.monotonic() > deadline:
            server.stop()
            sys.exit(f"{name} did not answer /healthz in 60 s:\n{log.read_text()}")
        time.sleep(0.2)
    # Every worker up (each answers /healthz only once booted): give late ones a moment.
    time.sleep(1.0)
    return server


# --------------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------------


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
    def cpu_ms_per_request(self) -> float:
        """Server CPU time per answered request: robust against other load on the machine."""
        return 1000.0 * self.server_cpu / self.rps if self.rps else 0.0

    @property
    def other_cpu(self) -> float:
        """Cores busy outside the server and the load generator (other work on the machine)."""
        cores = os.cpu_count() or 1
        busy = self.machine_cpu * cores
        return max(0.0, busy - self.server_cpu - self.db_cpu - self.loadgen_cpu)

    @property
    def rps(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


def run_wrk(base: str, corpus_file: Path, clients: int, seconds: float, threads: int) -> dict:
    command = [
        "wrk",
        f"-c{clients}",
        f"-t{min(threads, clients)}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(WRK_SCRIPT),
        base,
        "--",
        str(corpus_file),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(command, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out, err = finished.stdout, finished.stderr
    usage = SimpleNamespace(
        ru_utime=after.ru_utime - before.ru_utime, ru_stime=after.ru_stime - before.ru_stime
    )
    for line in out.decode().splitlines():
        if line.startswith("OLVBENCH "):
            result = json.loads(line[len("OLVBENCH ") :])
            result["seconds"] = result.pop("duration_us") / 1e6
            for key in ("p50", "p95", "p99", "max"):
                result[key] = result[key] / 1000.0
            result["usage"] = usage
            return result
    sys.exit(f"wrk gave no summary:\n{out.decode()}\n{err.decode()}")


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
    port: int, corpus_file: str, clients: int, offset: int, seconds: float, conn: Any
) -> None:
    wires = [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: text/xml; charset=utf-8\r\n"
            f'SOAPAction: "http://www.iicmva.com/VerifyInsurance"\r\n'
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


def read_corpus(path: Path) -> list[tuple[str, bytes]]:
    items = []
    with path.open("rb") as handle:
        while header := handle.readline():
            endpoint, length = header.decode().split()
            items.append((endpoint, handle.read(int(length))))
            handle.readline()
    return items


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
    elapsed = 0.0
    user = system = 0.0
    for process, parent in workers:
        part, lat, took = parent.recv()
        _, _, usage = os.wait4(process.pid, 0)
        user += usage.ru_utime
        system += usage.ru_stime
        totals = [a + b for a, b in zip(totals, part, strict=True)]
        latencies.extend(lat)
        elapsed = max(elapsed, took)
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000

    usage_like = SimpleNamespace(ru_utime=user, ru_stime=system)
    return {
        "sent": totals[0],
        "completed": totals[1],
        "failures": totals[2],
        "confirmed": totals[3],
        "socket_errors": totals[4],
        "timeouts": 0,
        "non_2xx": 0,
        "seconds": elapsed,
        "p50": pct(50),
        "p95": pct(95),
        "p99": pct(99),
        "max": latencies[-1] * 1000 if latencies else 0.0,
        "usage": usage_like,
    }


class LoadGenerator:
    def __init__(
        self, kind: str, corpus_file: Path, threads: int, quiet_wait: float, database: str = ""
    ) -> None:
        self.kind = kind
        self.database = database  # a PostgreSQL database whose backends' CPU is counted
        self.quiet_wait = quiet_wait
        self.corpus_file = corpus_file
        self.threads = threads
        self.total_sent = 0

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
            first = (version.stdout or version.stderr).splitlines()[0].split("Copyright")[0]
            return (
                f"{first.strip()} (C, {self.threads} thread(s), Lua script "
                f"bench/soap_wrk.lua rotating over pre-generated requests)"
            )
        return (
            f"Python asyncio raw-socket generator, {self.threads} process(es) "
            "(bench/soap_bench.py --loadgen python)"
        )

    def run(self, server: Server, clients: int, seconds: float, label: str) -> Run:
        if self.quiet_wait > 0:
            wait_for_quiet(self.quiet_wait)
        pids = server.pids()
        cpu_before = cpu_seconds(pids)
        db_before = cpu_by_pid(database_backends(self.database)) if self.database else {}
        busy_before, all_before = machine_busy()
        if self.kind == "wrk":
            result = run_wrk(server.base, self.corpus_file, clients, seconds, self.threads)
        else:
            result = run_python(server.base, self.corpus_file, clients, seconds, self.threads)
        busy_after, all_after = machine_busy()
        cpu_after = cpu_seconds(pids)
        db_after = cpu_by_pid(database_backends(self.database)) if self.database else {}
        db_cpu = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
        self.total_sent += result["sent"]
        usage = result["usage"]
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
            server_cpu=(cpu_after - cpu_before) / elapsed,
            db_cpu=db_cpu / elapsed,
            loadgen_cpu=(usage.ru_utime + usage.ru_stime) / elapsed if usage else 0.0,
            machine_cpu=(busy_after - busy_before) / max(1, all_after - all_before),
        )


# --------------------------------------------------------------------------------------------
# In-process (no HTTP) figure
# --------------------------------------------------------------------------------------------


def run_in_process(
    url: str, corpus: Corpus, seconds: float, quiet_wait: float, database: str = ""
) -> Run:
    from olv.config import Settings
    from service.soap_app import SoapApplication

    app = SoapApplication(Settings(database_url=url))
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        statuses.append(status)

    def environ(path: str, body: bytes) -> dict[str, Any]:
        return {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "CONTENT_TYPE": "text/xml; charset=utf-8",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_SOAPACTION": '"http://www.iicmva.com/VerifyInsurance"',
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }

    def once(path: str, body: bytes) -> bytes:
        statuses.clear()
        return b"".join(app(environ(path, body), start_response))

    for path, body in corpus.requests[:200]:  # warm-up: connections, schemas, caches
        once(path, body)
    latencies: list[float] = []
    failures = confirmed = 0
    position = 0
    if quiet_wait > 0:
        wait_for_quiet(quiet_wait)
    busy_before, all_before = machine_busy()
    db_before = cpu_by_pid(database_backends(database)) if database else {}
    began = time.perf_counter()
    cpu_before = time.process_time()
    stop_at = began + seconds
    while time.perf_counter() < stop_at:
        path, body = corpus.requests[position % len(corpus.requests)]
        position += 1
        t0 = time.perf_counter()
        answer = once(path, body)
        latencies.append(time.perf_counter() - t0)
        if not statuses or not statuses[0].startswith("200") or b"ResponseCode>" not in answer:
            failures += 1
        elif b">Confirmed<" in answer:
            confirmed += 1
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_before
    busy_after, all_after = machine_busy()
    db_after = cpu_by_pid(database_backends(database)) if database else {}
    app.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000

    return Run(
        label="in-process, no HTTP (1 thread)",
        clients=1,
        sent=len(latencies) + 200,
        completed=len(latencies),
        seconds=elapsed,
        failures=failures,
        confirmed=confirmed,
        socket_errors=0,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        max_ms=latencies[-1] * 1000,
        server_cpu=cpu / elapsed,
        db_cpu=sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items()) / elapsed,
        machine_cpu=(busy_after - busy_before) / max(1, all_after - all_before),
    )


# --------------------------------------------------------------------------------------------
# Profile (optional)
# --------------------------------------------------------------------------------------------

# Inclusive markers: a sample counts for a marker when any frame of its stack matches.
MARKERS = {
    "app": "SoapApplication.__call__ (service/soap_app.py",
    "spyne": "WsgiApplication.__call__ (spyne/server/wsgi.py",
    "spyne_gc": "MethodContext.close (spyne/context.py",
    "answer": "Verifier.answer (service/verifier.py",
    "read": "read (service/request.py",
    "decide": "decide (service/coverage.py",
    "db": "SqlPolicyStore._query (service/store.py",
    "build": "Verifier._build (service/verifier.py",
    "audit_record": "Verifier._audit (service/verifier.py",
    "audit_writer": "AuditWriter._run (service/audit.py",
    "xmlsafe": "parse (olv/xmlsafe.py",
    "auth": "identify (service/auth.py",
}


@dataclass
class Profile:
    samples: int  # all samples (GIL-holding threads of every worker)
    rate: int  # samples per second per process
    requests: int  # requests completed while sampling
    layers: list[tuple[str, int]]  # exclusive layers, derived from the markers
    top_lines: list[tuple[str, int]]  # innermost frame (function, file:line) by samples

    def ms_per_request(self, samples: int) -> float:
        return 1000.0 * samples / self.rate / max(1, self.requests)


def summarise_profile(raw: Path, rate: int, requests: int) -> Profile:
    """Where the GIL-holding time goes, from py-spy's collapsed stacks (``--format raw``)."""
    inclusive = dict.fromkeys(MARKERS, 0)
    lines: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        for name, marker in MARKERS.items():
            if marker in stack:
                inclusive[name] += samples
        innermost = stack.rsplit(";", 1)[-1]
        lines[innermost] = lines.get(innermost, 0) + samples
    m = inclusive
    verify_other = m["answer"] - m["read"] - m["decide"] - m["build"] - m["audit_record"]
    layers = [
        (
            "HTTP server (gunicorn/uvicorn): parsing, socket I/O, loop (outside the WSGI app)",
            total - m["app"] - m["audit_writer"],
        ),
        ("our WSGI front: body read, xmlsafe.parse, routing, auth", m["app"] - m["spyne"]),
        ("  of which xmlsafe.parse (the envelope's only parse)", m["xmlsafe"]),
        ("Spyne: envelope split, method context, events, serialization", m["spyne"] - m["answer"]),
        ("  of which Spyne's gc.collect() once a second (MethodContext.close)", m["spyne_gc"]),
        ("request reading + XSD validation (request.read)", m["read"]),
        ("decision table incl. DB (coverage.decide)", m["decide"]),
        ("  of which DB queries (SqlPolicyStore._query)", m["db"]),
        ("response building (+ re-validation when needed)", m["build"]),
        ("audit: queueing the entry (Verifier._audit)", m["audit_record"]),
        ("audit: writer thread (batched INSERTs)", m["audit_writer"]),
        ("verifier other (version detection, window, deadline)", verify_other),
    ]
    top = sorted(lines.items(), key=lambda item: -item[1])[:15]
    return Profile(total, rate, requests, layers, top)


def profile_server(
    server: Server, loadgen: LoadGenerator, seconds: float, outdir: Path
) -> tuple[Run, Profile | None]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("--profile needs py-spy: pip install py-spy")
    outdir.mkdir(parents=True, exist_ok=True)
    raw = outdir / "soap_profile.txt"
    rate = 200
    # --gil: only the thread holding the GIL is sampled, so samples measure Python CPU time
    # rather than threads queueing for the GIL; --nonblocking keeps the workers running.
    command = [
        spy,
        "record",
        "--subprocesses",
        "--gil",
        "--nonblocking",
        "-r",
        str(rate),
        "-f",
        "raw",
        "-o",
        str(raw),
        "-d",
        str(int(seconds)),
        "-p",
        str(server.process.pid),
    ]
    spy_process = subprocess.Popen(command, **_quiet())
    time.sleep(1.0)
    run = loadgen.run(server, 32, seconds - 2, "ours, 32 clients, under py-spy")
    spy_process.wait(60)
    if not raw.exists():
        return run, None
    return run, summarise_profile(raw, rate, run.completed)


def _quiet() -> dict[str, Any]:
    return {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def code_revision() -> str:
    """The commit measured, and whether the service's code differed from it."""
    root = BENCH_DIR.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "service", "olv", "xsd"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line for line in dirty if line.strip()]
    return f"{head}" + (f" with {len(changed)} uncommitted service file(s)" if changed else "")


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
    }


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
            f"{r.loadgen_cpu:.2f} | "
            f"{r.other_cpu:.2f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


# Preludes run before ``olv`` in the server process (``--what-if``).
_NO_SPYNE_GC = """
import spyne.const
spyne.const.MIN_GC_INTERVAL = float("inf")  # Spyne: gc.collect() at most once a second
"""
WHAT_IF = {
    "spyne-no-gc": _NO_SPYNE_GC,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark olv soap serve against SPEC §4.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Requirements:", 1)[1],
    )
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load")
    parser.add_argument("--policies", type=int, default=100_000)
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrencies")
    parser.add_argument("--requests", type=int, default=20_000, help="distinct request bodies")
    parser.add_argument("--workers", type=int, default=0, help="server workers (0: default)")
    parser.add_argument(
        "--loader",
        choices=("bulk", "cli"),
        default="cli",
        help="cli: olv policies import, as an insurer loads its store (the default); "
        "bulk: multi-row inserts of rows read by the project's CSV reader",
    )
    parser.add_argument("--threads", type=int, default=0, help="OLV_SOAP_THREADS (0: default)")
    parser.add_argument(
        "--what-if",
        choices=("none", *WHAT_IF),
        default="none",
        help="run a modified server to size an optimisation (not the shipped service): "
        "spyne-no-gc disables Spyne's forced gc.collect() once a second per worker "
        "(the service does so itself from commit bbfeadf on)",
    )
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk")
    parser.add_argument(
        "--loadgen-threads", type=int, default=1, help="wrk threads / generator processes"
    )
    parser.add_argument(
        "--floor-clients", default="32", help="concurrencies for the floor ('' to skip it)"
    )
    parser.add_argument("--floor-http", choices=("h11", "httptools"), default="h11")
    parser.add_argument("--floor-loop", choices=("asyncio", "uvloop"), default="asyncio")
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


def check_tools(args: argparse.Namespace) -> None:
    if args.loadgen == "wrk" and shutil.which("wrk") is None:
        sys.exit(
            "wrk is not installed. Install it (Debian/Ubuntu: apt-get install wrk) or run with "
            "--loadgen python (a weaker, CPU-hungrier generator)."
        )
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        sys.exit("the floor needs uvicorn: pip install uvicorn")


def main() -> int:
    args = parse_args()
    check_tools(args)
    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    floor_clients = [int(c) for c in args.floor_clients.split(",") if c.strip()]
    from service.server import default_workers

    workers = args.workers or default_workers()  # the floor gets as many as the service
    rng = random.Random(args.seed)
    today = date.today()  # the service answers for "today" in UTC by default
    info = machine_summary()
    print(
        f"machine: {info['cores']} cores, {info['memory']}, {info['cpu']}; "
        f"Python {info['python']}; {info['date']}; code {info['revision']}",
        flush=True,
    )

    workdir = Path(tempfile.mkdtemp(prefix="olv-soap-bench-"))
    try:
        return bench(args, clients, floor_clients, workers, rng, today, info, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench(
    args: argparse.Namespace,
    clients: list[int],
    floor_clients: list[int],
    workers: int,
    rng: random.Random,
    today: date,
    info: dict[str, str],
    workdir: Path,
) -> int:
    t0 = time.monotonic()
    policies = generate_policies(args.policies, today, rng)
    policy_csv = workdir / "policies.csv"
    write_policy_csv(policy_csv, policies, today, args.seed)
    corpus = generate_corpus(policies, today, args.requests, rng)
    corpus_file = workdir / "requests.txt"
    write_corpus(corpus_file, corpus)
    del policies
    print(
        f"data: {args.policies:,} policies, {len(corpus.requests):,} distinct requests "
        f"({100 * corpus.expected_confirmed / len(corpus.requests):.1f} % expected Confirmed)",
        flush=True,
    )

    with fresh_database(args.db, workdir, args.pg_url) as url:
        env = {**os.environ, "OLV_DATABASE_URL": url}
        env.pop("OLV_NAICS", None)
        olv("db", "upgrade", env=env)
        t_import = time.monotonic()
        if args.loader == "cli":
            olv("policies", "import", str(policy_csv), env=env)
        else:
            bulk_load(url, policy_csv)
        analyze(url)
        print(
            f"database: {args.db}, migrated; policies loaded ({args.loader}) in "
            f"{time.monotonic() - t_import:.1f} s",
            flush=True,
        )
        audit_before = count_rows(url, "audit_record")

        database = "" if args.db == "sqlite" else url.rsplit("/", 1)[1]
        loadgen = LoadGenerator(
            args.loadgen, corpus_file, args.loadgen_threads, args.quiet_wait, database
        )
        print(f"load generator: {loadgen.describe()}", flush=True)

        # --- ours --------------------------------------------------------------------------
        if args.threads:
            env["OLV_SOAP_THREADS"] = str(args.threads)
        if args.what_if != "none":
            # Not the shipped service: sizes an optimisation before anyone writes it.
            prelude = WHAT_IF[args.what_if]
            serve = [sys.executable, "-c", prelude + "from olv.cli import main\nmain()\n"]
        else:
            serve = [sys.executable, "-m", "olv"]
        serve += ["soap", "serve", "--host", "127.0.0.1"]
        if args.workers:
            serve += ["--workers", str(args.workers)]
        server = start_server("soap", serve, env, workdir)
        runs: list[Run] = []
        profile: Profile | None = None
        ours_label = f"ours ({args.db})"
        if args.what_if != "none":
            ours_label = f"ours ({args.db}, what-if {args.what_if})"
        try:
            loadgen.run(server, max(clients), args.warmup, "warm-up")
            for n in clients:
                run = loadgen.run(server, n, args.duration, ours_label)
                runs.append(run)
                print(table([run]).splitlines()[-1], flush=True)
            if args.profile:
                profiled, profile = profile_server(server, loadgen, args.duration + 2, args.profile)
                print(table([profiled]).splitlines()[-1], flush=True)
        finally:
            code = server.stop()
        log_lines = server.log.read_text(errors="replace").splitlines()[1:]  # after the banner
        if log_lines:
            print(f"server log ({len(log_lines)} lines), last ones:", *log_lines[-10:], sep="\n  ")
        time.sleep(0.5)
        audit_rows = count_rows(url, "audit_record") - audit_before
        audit_ok = audit_rows == loadgen.total_sent
        print(
            f"audit: {audit_rows:,} rows written, {loadgen.total_sent:,} requests sent "
            f"(warm-up included); server exit code {code} -> "
            f"{'MATCH' if audit_ok else 'MISMATCH'}",
            flush=True,
        )

        # --- the floor -----------------------------------------------------------------------
        floor_runs: list[Run] = []
        floor_http = ""
        if floor_clients:
            floor_runs, floor_http = run_floor(
                args, loadgen, floor_clients, workers, policy_csv, env, workdir
            )

        # --- no HTTP -----------------------------------------------------------------------
        in_process: Run | None = None
        in_process_audit = 0
        if args.in_process_seconds > 0:
            before = count_rows(url, "audit_record")
            in_process = run_in_process(
                url, corpus, args.in_process_seconds, args.quiet_wait, database
            )
            in_process_audit = count_rows(url, "audit_record") - before
            print(table([in_process]).splitlines()[-1], flush=True)

    extra = [in_process] if in_process else []
    threads = args.threads or "default"
    print(f"\n## {args.db}: {workers} workers, threads {threads}, {args.duration:g} s per run")
    print(table([*runs, *floor_runs, *extra]))
    print()
    ours32 = next((r for r in runs if r.clients == 32), runs[-1])
    floor32 = next((r for r in floor_runs if r.clients == ours32.clients), None)
    factor = None
    if floor32 is not None:
        factor = floor32.rps / ours32.rps if ours32.rps else float("inf")
        print(
            f"floor ({floor_http}) at {floor32.clients} clients: {floor32.rps:,.0f} req/s, "
            f"p99 {floor32.p99_ms:.2f} ms"
        )
        print(
            f"ours/floor throughput = {ours32.rps / floor32.rps:.2f} (the floor is "
            f"{factor:.2f}x faster; target <= {TARGET_FLOOR_FACTOR}x)"
        )
        print(f"ours/floor p99 = {ours32.p99_ms / floor32.p99_ms:.2f}x")
    if in_process is not None:
        print(
            f"no-HTTP in-process: {in_process.rps:,.0f} req/s on one thread "
            f"(p50 {in_process.p50_ms:.2f} ms, p99 {in_process.p99_ms:.2f} ms); "
            f"audit rows {in_process_audit:,} for {in_process.sent:,} calls"
        )
    confirmed_share = ours32.confirmed / max(1, ours32.completed)
    print(
        f"answers at {ours32.clients} clients: {100 * confirmed_share:.1f} % Confirmed "
        f"(corpus expects {100 * corpus.expected_confirmed / len(corpus.requests):.1f} %)"
    )
    met = (
        ours32.clients == 32
        and ours32.rps >= TARGET_RPS
        and ours32.p99_ms <= TARGET_P99_MS
        and factor is not None
        and factor <= TARGET_FLOOR_FACTOR
    )
    print(
        f"SPEC §4 target (>= {TARGET_RPS} req/s, p99 <= {TARGET_P99_MS:g} ms at 32 clients, "
        f"within {TARGET_FLOOR_FACTOR}x of the floor): {'MET' if met else 'NOT MET'}"
    )
    if profile:
        print_profile(profile)
    failures = sum(r.failures + r.socket_errors for r in [*runs, *floor_runs, *extra])
    print(f"\ntotal bench time {time.monotonic() - t0:.0f} s")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "db": args.db,
                    "workers": workers,
                    "threads": args.threads or None,
                    "what_if": args.what_if,
                    "loadgen": loadgen.describe(),
                    "floor_http": floor_http,
                    "runs": [_as_dict(r) for r in runs],
                    "floor": [_as_dict(r) for r in floor_runs],
                    "in_process": _as_dict(in_process) if in_process else None,
                    "audit_rows": audit_rows,
                    "requests_sent": loadgen.total_sent,
                    "in_process_audit_rows": in_process_audit,
                    "mix": corpus.mix,
                    "profile": None
                    if profile is None
                    else {
                        "samples": profile.samples,
                        "rate": profile.rate,
                        "requests": profile.requests,
                        "layers": profile.layers,
                        "top_lines": profile.top_lines,
                    },
                },
                indent=2,
            )
        )
    in_process_ok = in_process is None or in_process_audit == in_process.sent
    return 0 if audit_ok and failures == 0 and in_process_ok else 1


def _as_dict(run: Run) -> dict[str, Any]:
    return run.__dict__ | {"rps": run.rps, "cpu_ms_per_request": run.cpu_ms_per_request}


def run_floor(
    args: argparse.Namespace,
    loadgen: LoadGenerator,
    floor_clients: list[int],
    workers: int,
    policy_csv: Path,
    env: dict[str, str],
    workdir: Path,
) -> tuple[list[Run], str]:
    command = [sys.executable, str(FLOOR_SCRIPT), "--host", "127.0.0.1"]
    command += ["--workers", str(workers), "--policies", str(policy_csv)]
    command += ["--http", args.floor_http, "--loop", args.floor_loop]
    floor_server = start_server("floor", command, env, workdir)
    runs = []
    try:
        floor_http = floor_server.log.read_text().strip().splitlines()[0]
        loadgen.run(floor_server, max(floor_clients), args.warmup, "warm-up")
        for n in floor_clients:
            label = f"floor (uvicorn {args.floor_http}+lxml+dict)"
            run = loadgen.run(floor_server, n, args.duration, label)
            runs.append(run)
            print(table([run]).splitlines()[-1], flush=True)
    finally:
        floor_server.stop()
    return runs, floor_http


def print_profile(profile: Profile) -> None:
    print(
        f"\nprofile (py-spy --gil, {profile.rate} Hz, all workers) under 32 clients: "
        f"{profile.samples:,} samples for {profile.requests:,} requests = "
        f"{profile.ms_per_request(profile.samples):.3f} ms of GIL-holding time per request"
    )
    for name, samples in profile.layers:
        print(
            f"  {100 * samples / profile.samples:5.1f} %  "
            f"{profile.ms_per_request(samples):.3f} ms/req  {name}"
        )
    print("  top innermost frames:")
    for frame, samples in profile.top_lines:
        print(f"  {100 * samples / profile.samples:5.1f} %  {frame}")


if __name__ == "__main__":
    sys.exit(main())
