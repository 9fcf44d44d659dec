"""Where a SOAP worker's time goes: py-spy on the running server, split by layer.

``py-spy record --subprocesses --gil`` samples only the thread holding the GIL, so samples
measure Python CPU time rather than threads queueing for the GIL. Each layer is found by
inclusive frame markers: a sample counts for a marker when any frame of its stack matches.
A marker that matched nothing is reported, since it means the code it names was renamed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadgen import LoadGenerator, Run
from servers import Server

MARKERS = {
    "asgi": "AsgiSoap._http (service/asgi.py",
    # uvicorn's socket I/O, awaited from inside the adapter: counted as the server's.
    "http_send": "RequestResponseCycle.send (uvicorn/",
    "http_receive": "RequestResponseCycle.receive (uvicorn/",
    "admit": "SoapApplication.admit (service/soap_app.py",
    "settle": "SoapApplication.settle (service/soap_app.py",
    "respond": "SoapApplication.respond (service/soap_app.py",
    "spyne": "WsgiApplication.__call__ (spyne/server/wsgi.py",
    "read": "read (service/request.py",
    # The batch's decision runs at the end of the loop's turn (service.coalesce), outside the
    # request's own frames: its reads too, awaited or not.
    "decide": (
        "Coalescer._flush (service/coalesce.py",
        "Coalescer._reads_awaited (service/coalesce.py",
        "Coalescer._on_pool (service/coalesce.py",
        "decide (service/coverage.py",
    ),
    "db": (
        "SqlPolicyStore._query (service/store.py",
        "SqlPolicyStore.read_batch_awaited (service/store.py",
    ),
    "build": "Verifier._build (service/verifier.py",
    "envelope": "Response.enveloped (service/response.py",
    "audit_record": "Verifier._audit (service/verifier.py",
    "audit_writer": "AuditWriter._run (service/audit.py",
    "xmlsafe": "parse (olv/xmlsafe.py",
    "auth": "Identities.__call__ (service/auth.py",
}
# Only asked for by messages other than a CoverageRequest (the bench sends none).
OPTIONAL = {"spyne"}


def _found(marker: str | tuple[str, ...], stack: str) -> bool:
    if isinstance(marker, str):
        return marker in stack
    return any(each in stack for each in marker)


RATE = 200  # samples per second per process


@dataclass
class Profile:
    samples: int  # all samples (GIL-holding threads of every worker)
    rate: int
    requests: int  # requests completed while sampling
    layers: list[tuple[str, int]]  # derived from the markers
    top_frames: list[tuple[str, int]]  # innermost frame (function, file:line) by samples
    unmatched: list[str]  # markers that matched no sample

    def ms_per_request(self, samples: int) -> float:
        return 1000.0 * samples / self.rate / max(1, self.requests)

    def as_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def summarise(raw: Path, rate: int, requests: int) -> Profile:
    """Layers and top frames from py-spy's collapsed stacks (``--format raw``)."""
    inclusive = dict.fromkeys(MARKERS, 0)
    frames: dict[str, int] = {}
    total = 0
    decide_outside = 0  # the batch's decision run from the loop, not from a request's frames
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        found = {name for name, marker in MARKERS.items() if _found(marker, stack)}
        for name in found:
            inclusive[name] += samples
        if "decide" in found and "asgi" not in found:
            decide_outside += samples
        innermost = stack.rsplit(";", 1)[-1]
        frames[innermost] = frames.get(innermost, 0) + samples
    m = inclusive
    http_io = m["http_send"] + m["http_receive"]
    app = m["admit"] + m["settle"] + m["respond"]
    decide_inside = m["decide"] - decide_outside
    known = m["read"] + decide_inside + m["build"] + m["envelope"] + m["audit_record"] + m["spyne"]
    layers = [
        (
            "uvicorn (httptools, uvloop): HTTP parsing, socket I/O, event loop",
            total - m["asgi"] - m["audit_writer"] - decide_outside + http_io,
        ),
        ("  of which sending and receiving (RequestResponseCycle)", http_io),
        ("ASGI adapter (service/asgi.py): environ, body, reply", m["asgi"] - app - http_io),
        ("admission (SoapApplication.admit): body, routing, parse, requester", m["admit"]),
        ("  of which xmlsafe.parse (the envelope's only parse)", m["xmlsafe"]),
        ("  of which the requester check (auth.Identities)", m["auth"]),
        ("request reading + XSD validation (request.read)", m["read"]),
        ("the batch's decision incl. DB (service.coalesce, coverage)", m["decide"]),
        ("  of which DB reads (SqlPolicyStore)", m["db"]),
        ("response building (Verifier._build)", m["build"]),
        ("the answer written in its envelope (Response.enveloped)", m["envelope"]),
        ("audit: queueing the entry (Verifier._audit)", m["audit_record"]),
        ("audit: writer thread (AuditWriter._run)", m["audit_writer"]),
        ("Spyne (messages other than a CoverageRequest)", m["spyne"]),
        (
            "other (envelope split, version, window, deadline gate, reply)",
            m["settle"] + m["respond"] - known,
        ),
    ]
    top = sorted(frames.items(), key=lambda item: -item[1])[:15]
    unmatched = [
        str(MARKERS[name])
        for name, samples in inclusive.items()
        if not samples and name not in OPTIONAL
    ]
    return Profile(total, rate, requests, layers, top, unmatched)


def profile_server(
    server: Server, loadgen: LoadGenerator, clients: int, seconds: float, outdir: Path
) -> tuple[Run, Profile | None]:
    """A ``clients``-client run of ``seconds`` under py-spy; raw stacks kept in ``outdir``."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        sys.exit("--profile needs py-spy: pip install py-spy")
    outdir.mkdir(parents=True, exist_ok=True)
    raw = outdir / "soap_profile.txt"
    command = [
        spy,
        "record",
        "--subprocesses",
        "--gil",
        "--nonblocking",  # do not stop the workers to sample them
        "-r",
        str(RATE),
        "-f",
        "raw",
        "-o",
        str(raw),
        "-d",
        str(int(seconds + 2)),
        "-p",
        str(server.process.pid),
    ]
    spy_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches to every worker before the load starts
    run = loadgen.run(server, clients, seconds, f"ours, {clients} clients, under py-spy")
    spy_process.wait(60)
    if not raw.exists():
        return run, None
    return run, summarise(raw, RATE, run.completed)


def print_profile(profile: Profile, clients: int) -> None:
    print(
        f"\nprofile (py-spy --gil, {profile.rate} Hz, all workers) under {clients} clients: "
        f"{profile.samples:,} samples for {profile.requests:,} requests = "
        f"{profile.ms_per_request(profile.samples):.3f} ms of GIL-holding time per request"
    )
    share = 100 / max(1, profile.samples)
    for name, samples in profile.layers:
        print(f"  {share * samples:5.1f} %  {profile.ms_per_request(samples):.3f} ms/req  {name}")
    print("  top innermost frames:")
    for frame, samples in profile.top_frames:
        print(f"  {share * samples:5.1f} %  {frame}")
    for marker in profile.unmatched:
        print(f"  warning: no sample matched {marker!r}: update MARKERS in bench/soap_profile.py")
