"""The service's work without HTTP: ``SoapApplication`` called in-process on one thread.

Same request bodies, same database, a WSGI environ built here: the difference to the HTTP
runs is what the server, the sockets and the worker layout cost.
"""

from __future__ import annotations

import io
import sys
import time
from typing import Any

from loadgen import Run, percentile
from procstat import BackendCpu, busy_share, machine_busy, wait_for_quiet
from soap_corpus import Corpus

from olv.config import Settings
from olv.iicmva import SOAP_ACTION
from service.soap_app import SoapApplication

WARMUP_CALLS = 200  # connections, schemas, caches


def _environ(path: str, body: bytes) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "text/xml; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_SOAPACTION": f'"{SOAP_ACTION}"',
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def run_in_process(
    url: str, corpus: Corpus, seconds: float, quiet_wait: float, database: str = ""
) -> Run:
    """Call the application for ``seconds``; ``sent`` includes the warm-up calls (audited)."""
    app = SoapApplication(Settings(database_url=url))
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        statuses.append(status)

    def once(path: str, body: bytes) -> bytes:
        statuses.clear()
        return b"".join(app(_environ(path, body), start_response))

    try:
        for path, body in corpus.requests[:WARMUP_CALLS]:
            once(path, body)
        warmups = min(WARMUP_CALLS, len(corpus.requests))
        latencies: list[float] = []
        failures = confirmed = position = 0
        if quiet_wait > 0:
            wait_for_quiet(quiet_wait)
        machine_before = machine_busy()
        backends = BackendCpu(database)
        backends.start()
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
        db_cpu = backends.stop()
        machine_after = machine_busy()
    finally:
        app.close()  # flushes the audit queue: every call has its row afterwards
    latencies.sort()
    return Run(
        label="in-process, no HTTP (1 thread)",
        clients=1,
        sent=len(latencies) + warmups,
        completed=len(latencies),
        seconds=elapsed,
        failures=failures,
        confirmed=confirmed,
        socket_errors=0,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        max_ms=latencies[-1] * 1000 if latencies else 0.0,
        server_cpu=cpu / elapsed,
        db_cpu=db_cpu / elapsed,
        machine_cpu=busy_share(machine_before, machine_after),
    )
