"""What both servers share for ``/metrics``: the worker processes' shared directory, the
exposition, and who may read it.

**Several processes.** ``olv soap serve`` and ``olv portal serve`` run prometheus-client in
multiprocess mode: each worker writes its values to memory-mapped files in one directory, and
``/metrics``, answered by any worker, adds them all up (a counter never goes back when a
worker is replaced). The directory is ``PROMETHEUS_MULTIPROC_DIR`` when the operator sets it
(its old files are removed at start: one directory per server, never shared by two), else a
private temporary directory made at start and removed at stop. It must be chosen before the
first value is made, so :func:`multiprocess_dir` runs before the workers start.

**Who may read.** Only sources in ``OLV_METRICS_NETWORKS`` (default: loopback), the source
judged as for any request (:mod:`olv.forwarding`): a forwarding header counts only from a
trusted proxy, so a client cannot make its request look local by writing one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from olv import forwarding
from olv.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Latency buckets in seconds, for both servers: fine below 50 ms (a verification on a healthy
# database), coarse up to the 5-second budget.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip


# The process id, read again only after a fork. prometheus-client's multiprocess values ask
# for it on every increment to notice a fork (os.getpid is a system call each time: three per
# SOAP request); the fork hook keeps this answer as exact as the call.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def process_identifier() -> int:
    """This process's id, as ``os.getpid()`` returns it, without a system call."""
    return _pid


def _value_class() -> type:
    if os.environ.get(MULTIPROC_ENV):
        return values.MultiProcessValue(process_identifier)  # type: ignore[no-untyped-call,no-any-return]
    return values.get_value_class()  # type: ignore[no-untyped-call,no-any-return]


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[Path]:
    """For a server's lifetime: the directory the workers share, empty at start."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous run's values would add to this one's
            stale.unlink()
        made = False
    else:
        path = Path(tempfile.mkdtemp(prefix="olv-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
        made = True
    # prometheus-client picks its value store when first imported; this process may have
    # imported it before the variable was set.
    values.ValueClass = _value_class()
    try:
        yield path
    finally:
        if made:
            os.environ.pop(MULTIPROC_ENV, None)
            values.ValueClass = _value_class()
            shutil.rmtree(path, ignore_errors=True)


def worker_gone(pid: int) -> None:
    """A worker ended: its gauges of what is live (queue depths, lags) stop counting."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition(extra: Iterable[Metric] = ()) -> bytes:
    """The text format: every worker's values (in multiprocess mode) or this process's, then
    the ``extra`` families computed for this scrape."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        text = generate_latest(registry)
    else:
        text = generate_latest(REGISTRY)
    families = list(extra)
    if families:
        sampled = CollectorRegistry(auto_describe=False)
        sampled.register(_Sampled(families))
        text += generate_latest(sampled)
    return text


class _Sampled(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def may_scrape(environ: Mapping[str, str], settings: Settings) -> bool:
    """``environ`` holds ``REMOTE_ADDR`` and the forwarding headers (CGI names)."""
    return may_scrape_from(forwarding.source(environ, settings).address, settings)


def may_scrape_from(address: forwarding.IPAddress | None, settings: Settings) -> bool:
    """For a server that has already judged the source (the portal's request guard)."""
    return forwarding.within(address, settings.metrics_networks)
