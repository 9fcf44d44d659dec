"""A response's head and body in one write (:func:`one_write`).

uvicorn writes a response's status line and headers when the app starts the answer, and the
body when it sends it: two system calls, two segments on the wire, and two wake-ups of the
client, for every answer the portal gives. A verification's answer is small and its head and
body are sent one right after the other, so the portal holds the head until the body's first
write — or the end of the event loop's current turn, whichever comes first — and sends them
together. Nothing waits longer than that turn: a streamed answer's head still leaves before
its first chunk is awaited, and a close sends what is held first.

The write of the head was the largest single item of the portal's CPU per verification
(bench/RESULTS.md, "State portal").
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _HeldHead:
    """The transport a request's cycle writes to: its first write (the head, or a ``100
    Continue``) is held until the next write or the end of this turn of the loop."""

    __slots__ = ("_transport", "_loop", "_held", "_flush_handle", "_first")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._first = True

    def write(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self._held = bytes(data)
            self._flush_handle = self._loop.call_soon(self.flush)
            return
        if self._held is not None:
            data = self._held + data
            self._held = None
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        self._transport.write(data)

    def flush(self) -> None:
        self._flush_handle = None
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def one_write(protocol: type[HttpToolsProtocol]) -> type[HttpToolsProtocol]:
    """``protocol`` whose request cycles write a response's head together with its body."""

    class OneWriteProtocol(protocol):  # type: ignore[valid-type,misc]
        def on_headers_complete(self) -> None:
            before = self.cycle
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle is not before:
                cycle.transport = _HeldHead(self.transport, self.loop)

    return OneWriteProtocol
