"""``olv soap serve``: the SOAP application under uvicorn, one worker process per core.

Each worker has its own listening socket on the same port (``SO_REUSEPORT``), so the kernel
spreads connections evenly; with one shared socket, one event loop tended to take most of the
keep-alive connections and its clients saw the worst latencies. A small supervisor restarts
a worker that dies, rolls the workers on SIGHUP, and on SIGTERM/SIGINT stops them gracefully
(each flushes its audit queue) and exits 0.

SO_REUSEPORT would also let a second ``olv soap serve`` (or any program of the same user) join
the port and silently take a share of the traffic, so the port is claimed first
(:func:`olv.ports.claim_port`); the workers bind only after that.
"""

from __future__ import annotations

import os
import sys
from functools import partial

import uvicorn

from olv import metrics
from olv.config import Settings
from olv.ports import PortClaim
from olv.serving import COMMON_OPTIONS, Supervisor, http_protocol


def default_workers() -> int:
    # One event loop per core: a third process on two cores measured a worse p99, not more
    # throughput (bench/RESULTS.md).
    return os.cpu_count() or 1


def _config(host: str, port: int, settings: Settings) -> uvicorn.Config:
    # Half-sent requests are dropped (slowloris); what a connection writes in one turn of the
    # loop leaves in one write (olv.response_write).
    http = http_protocol(settings.soap_header_timeout_seconds, settings.soap_body_idle_seconds)
    return uvicorn.Config(
        "service.asgi:create_app",
        **{**COMMON_OPTIONS, "http": http},
        host=host,
        port=port,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=20,
        date_header=False,
    )


def serve(settings: Settings, claim: PortClaim, workers: int | None = None) -> None:
    """Run on the claimed port until SIGTERM/SIGINT; exits 0 once every worker has stopped."""
    count = workers or settings.soap_workers or default_workers()
    config = partial(_config, claim.host, claim.port, settings)
    with metrics.multiprocess_dir():  # before the workers make their first value
        code = Supervisor(claim.host, claim.port, count, config).run()
    claim.close()
    sys.exit(code)
