"""A cap on how many requests of one kind are worked on at once (:class:`InFlight`).

Heavy reports must not take every worker thread and database connection: past the cap a
request is refused at once (503 with ``Retry-After``) instead of queueing behind the others,
so that real-time queries keep their share of the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Depends, Request

from portal.errors import ApiError

RETRY_AFTER_SECONDS = 5


class InFlight:
    """Counts the requests in progress; used from the event loop only (no lock needed)."""

    def __init__(self, what: str, limit: int) -> None:
        self.what = what
        self.limit = limit
        self.busy = 0

    def enter(self) -> None:
        if self.busy >= self.limit:
            raise ApiError(
                503,
                f"{self.limit} {self.what} already in progress; try again in a few seconds",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1


def held(gate: Callable[[Request], InFlight]) -> Any:
    """A dependency that holds a place of ``gate(request)`` for the rest of the request.

    Declare it before any dependency that takes a worker thread (a database session): a
    refused request must not have waited for one."""

    async def hold(request: Request) -> AsyncIterator[None]:
        cap = gate(request)
        cap.enter()
        try:
            yield
        finally:
            cap.leave()

    return Depends(hold)
