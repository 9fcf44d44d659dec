"""How OLV's servers run uvicorn (``olv soap serve``, ``olv portal serve``): the app factory on
httptools and uvloop, quiet (OLV writes its own JSON-lines logs), no server header, and a
clean stop that exits 0."""

from __future__ import annotations

import contextlib
import gc
import signal
from collections.abc import Iterator
from typing import Any

import uvicorn

# Each server adds its host, port and its own timeouts.
COMMON_OPTIONS: dict[str, Any] = {
    "factory": True,
    "http": "httptools",
    "loop": "uvloop",
    "lifespan": "on",
    "access_log": False,
    "log_level": "warning",
    "log_config": None,  # keep OLV's JSON-lines logging
    "server_header": False,
}


# Young-generation collections every 50,000 allocations instead of 700: a request allocates
# a few thousand objects, and at the default the collector ran several times per request,
# costing a fifth of the portal's CPU and most of its latency tail (bench/RESULTS.md).
GC_THRESHOLDS = (50_000, 20, 10)


def settle_gc() -> None:
    """For a server process once its app is built: move what startup made (modules, schemas,
    templates) out of the collector's sight for good, and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class QuietServer(uvicorn.Server):
    """A uvicorn server whose SIGTERM/SIGINT stop ends the process normally."""

    # uvicorn re-raises the stop signal after shutting down; a clean stop should exit 0.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
