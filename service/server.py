"""``olv soap serve``: the SOAP application under uvicorn worker processes (keep-alive).

Each worker process builds its own database engine and audit writer after the fork, and
flushes its audit queue at shutdown, so a graceful stop or restart loses no row.
"""

from __future__ import annotations

import os

import uvicorn
from uvicorn.supervisors import Multiprocess

from olv.config import Settings


def default_workers() -> int:
    # One event loop per core: a third process on two cores measured a worse p99, not more
    # throughput (bench/RESULTS.md).
    return os.cpu_count() or 1


def serve(settings: Settings, host: str, port: int, workers: int | None = None) -> None:
    """Run until SIGTERM/SIGINT; exits 0 after every worker has shut down gracefully."""
    config = uvicorn.Config(
        "service.asgi:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.soap_workers or default_workers(),
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=20,
        server_header=False,
        date_header=False,
    )
    # Always behind uvicorn's supervisor, even with one worker: it restarts a worker that dies
    # and turns a signal into a clean exit of the whole service.
    Multiprocess(config, sockets=[config.bind_socket()]).run()
