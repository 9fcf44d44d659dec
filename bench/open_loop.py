"""Requests at a fixed offered rate (open loop), each timed from when it was due.

A closed loop (wrk's N clients, each sending its next request when the last is answered)
measures a server at its own saturation: its p99 is mostly queueing, and a slower server is
simply offered less. Here the requests are due at fixed intervals whatever the answers do,
so two servers offered the same rate are under the same load, and a request sent late because
an earlier one held things up counts its lateness (no coordinated omission).

One uvloop + aiohttp process, keep-alive connections (at most ``connections``), a warm-up at
the same rate first (its connections opened, its figures dropped): at a few hundred requests
a second its CPU is small beside the servers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

WARM_UP_SECONDS = 2.0


@dataclass(frozen=True)
class Call:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Figures:
    offered_rps: float
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """One server to offer the rate to: its address, request ``i`` (``make(i)``) and the test
    of a right answer (``ok(status, body)``)."""

    base: str
    make: Callable[[int], Call]
    ok: Callable[[int, bytes], bool]


async def run(
    base: str,
    make: Callable[[int], Call],
    ok: Callable[[int, bytes], bool],
    rate: float,
    seconds: float,
    connections: int = 64,
) -> Figures:
    """``rate`` requests a second for ``seconds`` to ``base`` (after a warm-up at that rate);
    request ``i`` is ``make(i)``, its answer right when ``ok(status, body)``."""
    (figures,) = await interleaved([Target(base, make, ok)], rate, seconds, 1, connections)
    return figures


async def interleaved(
    targets: list[Target], rate: float, seconds: float, windows: int, connections: int = 64
) -> list[Figures]:
    """``rate`` requests a second for ``seconds`` to each target, in turns: ``windows`` windows
    each, the targets one after the other in every round, so that each sees the machine's
    slow and fast phases alike (a shared machine changes speed within a minute). Each target's
    figures are over all its windows; warm-ups at the rate first, not counted."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                aiohttp.ClientSession(
                    target.base,
                    connector=aiohttp.TCPConnector(limit=connections),
                    timeout=timeout,
                )
            )
            for target in targets
        ]
        for client, target in zip(clients, targets, strict=True):
            await _paced(client, target.make, target.ok, rate, WARM_UP_SECONDS, [], [])
        latencies: list[list[float]] = [[] for _ in targets]
        failed: list[list[int]] = [[] for _ in targets]
        each = seconds / windows
        for window in range(windows):
            first = window * max(1, int(rate * each))
            for k, (client, target) in enumerate(zip(clients, targets, strict=True)):
                await _paced(
                    client, target.make, target.ok, rate, each, latencies[k], failed[k], first
                )
    return [_figures(rate, done, bad) for done, bad in zip(latencies, failed, strict=True)]


def _figures(rate: float, latencies: list[float], failed: list[int]) -> Figures:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))], 2)

    return Figures(rate, len(ordered), len(failed), pct(50), pct(99), round(ordered[-1], 2))


async def _paced(
    client: aiohttp.ClientSession,
    make: Callable[[int], Call],
    ok: Callable[[int, bytes], bool],
    rate: float,
    seconds: float,
    latencies: list[float],
    failed: list[int],
    first: int = 0,
) -> None:
    """Each request started as a task when it is due (not all made up front, which would
    spend the generator's CPU in bursts), timed from its due moment; the requests are
    ``make(first)`` onwards."""

    async def one(i: int, due: float) -> None:
        call = make(i)
        try:
            async with client.post(call.path, data=call.body, headers=call.headers) as answer:
                right = ok(answer.status, await answer.read())
        except (aiohttp.ClientError, TimeoutError):
            right = False
        latencies.append((time.perf_counter() - due) * 1000)
        if not right:
            failed.append(i)

    total = max(1, int(rate * seconds))
    start = time.perf_counter()
    running: set[asyncio.Task[None]] = set()
    for i in range(total):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(first + i, due))
        running.add(task)
        task.add_done_callback(running.discard)
    while running:
        await asyncio.gather(*running)
