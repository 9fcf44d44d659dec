"""Insurers' host names to addresses, so that one insurer's name lookups never hold up another's.

The event loop's own lookups cannot be given a deadline: uvloop runs them on libuv's pool of
four threads, shared by every insurer, and a call that gives up on one leaves the lookup
running. Four lookups of a name whose DNS never answers then held every thread, and the
lookups of every healthy insurer queued behind them until the system resolver gave up, long
after each query's budget. So the portal looks insurer names up itself:

* an IP literal needs no lookup;
* a name has at most one lookup in flight: the connects that need it meanwhile wait for that
  one, each only as long as its own deadline allows, and a lookup is never started twice;
* lookups run on threads of their own, at most ``LOOKUP_THREADS`` at once: when every one is
  held by a lookup that does not end, a name with no answer to fall back on fails at once
  (only that insurer is unavailable), and nothing else queues;
* an answer is used for ``FRESH_SECONDS``, then looked up again in the background while the
  old answer is still used, up to ``STALE_SECONDS`` after it came: a DNS outage shorter than
  that leaves a working insurer working;
* a failed lookup is not asked again for ``FAILED_SECONDS``, so a dead name costs one lookup
  every few seconds, not one per query.

The state is kept under a thread lock and the lookups' outcomes are handed to each waiter's
own event loop, so one resolver serves any number of loops (the portal has one per worker
process; ``shared`` is made anew in each forked child, where no lookup thread survives).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "FAILED_SECONDS",
    "FRESH_SECONDS",
    "LOOKUP_THREADS",
    "STALE_SECONDS",
    "Address",
    "LookupFailed",
    "Resolver",
    "shared",
    "system_lookup",
]

LOOKUP_THREADS = 8  # at most this many distinct names looked up at once, per process
FRESH_SECONDS = 30.0
STALE_SECONDS = 600.0  # a former answer still used while lookups fail or hang
FAILED_SECONDS = 5.0
_PRUNE_AT = 256  # names kept before expired ones are dropped

Address = tuple[int, str]  # address family, IP address
Lookup = Callable[[str], Iterable[Address]]


class LookupFailed(OSError):
    """The insurer's host name has no address to connect to (now)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"name lookup of {host} failed: {reason}")
        self.host = host
        self.reason = reason


def system_lookup(host: str) -> list[Address]:
    """The system resolver's addresses for ``host``, in its order, without repeats.

    ``socket.getaddrinfo`` is looked up at each call: the tests replace it."""
    found: list[Address] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM):
        address = (int(family), str(sockaddr[0]))
        if address not in found:
            found.append(address)
    return found


def literal(host: str) -> Address | None:
    """``host`` as an address when it is an IP literal (never looked up)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET if ip.version == 4 else socket.AF_INET6, host)


@dataclass
class _Entry:
    """The last lookup's outcome for one name."""

    addresses: tuple[Address, ...] | None  # None: nothing to fall back on
    reason: str  # why the last lookup failed ("" when it did not)
    retry_at: float  # no new lookup before this
    usable_until: float  # the addresses are not used after this


@dataclass
class _Flight:
    """One lookup in progress and the connects waiting for it."""

    waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[tuple[Address, ...] | str]]] = (
        field(default_factory=set)
    )


class Resolver:
    """Looks names up with ``lookup`` (the system resolver unless given), as described above."""

    def __init__(
        self,
        lookup: Lookup | None = None,
        *,
        threads: int = LOOKUP_THREADS,
        fresh: float = FRESH_SECONDS,
        stale: float = STALE_SECONDS,
        failed: float = FAILED_SECONDS,
    ) -> None:
        self.lookup: Lookup = lookup or system_lookup
        self.threads = threads
        self.fresh = fresh
        self.stale = max(stale, fresh)
        self.failed = failed
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._flights: dict[str, _Flight] = {}

    def in_flight(self) -> int:
        """Lookups started and not ended (each holds a thread)."""
        with self._lock:
            return len(self._flights)

    async def resolve(self, host: str) -> list[Address]:
        """The addresses to connect to for ``host``; raises :class:`LookupFailed`.

        Bounded by the caller's deadline only: a cancelled wait leaves the lookup running for
        the others (and for the cache)."""
        address = literal(host)
        if address is not None:
            return [address]
        host = host.lower()
        loop = asyncio.get_running_loop()
        with self._lock:
            now = time.monotonic()
            entry = self._entries.get(host)
            usable = (
                entry.addresses
                if entry is not None and entry.addresses and now < entry.usable_until
                else None
            )
            if entry is not None and now < entry.retry_at:
                if usable:
                    return list(usable)
                raise LookupFailed(host, entry.reason)
            flight = self._flights.get(host)
            if flight is None:
                if len(self._flights) >= self.threads:
                    if usable:
                        return list(usable)
                    raise LookupFailed(host, "every name-lookup thread is busy")
                flight = self._start(host)
            if usable:
                return list(usable)  # the lookup refreshes it for the next connects
            waiter: asyncio.Future[tuple[Address, ...] | str] = loop.create_future()
            flight.waiters.add((loop, waiter))
        try:
            outcome = await waiter
        finally:
            with self._lock:
                flight.waiters.discard((loop, waiter))
        if isinstance(outcome, str):
            raise LookupFailed(host, outcome)
        return list(outcome)

    def _start(self, host: str) -> _Flight:
        """Called with the lock held."""
        flight = _Flight()
        # A daemon thread of its own: a lookup that never ends must not hold up the process's
        # exit, as a ThreadPoolExecutor's workers would (they are joined at exit).
        thread = threading.Thread(
            target=self._run, args=(host, flight), name="olv-insurer-dns", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # no thread to be had
            raise LookupFailed(host, str(exc)) from None
        self._flights[host] = flight
        return flight

    def _run(self, host: str, flight: _Flight) -> None:
        outcome: tuple[Address, ...] | str = "the lookup ended without an answer"
        try:
            addresses = tuple(self.lookup(host))
            outcome = addresses if addresses else "no address"
        except Exception as exc:
            outcome = (
                exc.strerror
                if isinstance(exc, OSError) and exc.strerror
                else str(exc) or type(exc).__name__
            )
        finally:
            self._finish(host, flight, outcome)

    def _finish(self, host: str, flight: _Flight, outcome: tuple[Address, ...] | str) -> None:
        now = time.monotonic()
        with self._lock:
            if self._flights.get(host) is flight:
                del self._flights[host]
            if isinstance(outcome, str):
                entry = self._entries.get(host)
                if entry is not None and entry.addresses and now < entry.usable_until:
                    self._entries[host] = _Entry(
                        entry.addresses, outcome, now + self.failed, entry.usable_until
                    )
                else:
                    self._entries[host] = _Entry(None, outcome, now + self.failed, 0.0)
            else:
                self._entries[host] = _Entry(outcome, "", now + self.fresh, now + self.stale)
            if len(self._entries) > _PRUNE_AT:
                self._prune(now)
            waiters = list(flight.waiters)
        for loop, waiter in waiters:
            # A loop closed since: nobody is waiting there any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, waiter, outcome)

    def _prune(self, now: float) -> None:
        for host, entry in list(self._entries.items()):
            if entry.retry_at < now and entry.usable_until < now:
                del self._entries[host]


def _settle(
    waiter: asyncio.Future[tuple[Address, ...] | str], outcome: tuple[Address, ...] | str
) -> None:
    if not waiter.done():  # its caller may have given up meanwhile
        waiter.set_result(outcome)


shared = Resolver()


def _after_fork() -> None:
    # The parent's lookup threads do not exist in the child: their flights would never end.
    global shared
    shared = Resolver()


os.register_at_fork(after_in_child=_after_fork)
