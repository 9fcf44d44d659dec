"""What a thread of this process did with its time: ran, waited for a CPU, or was blocked.

The deadline gate (:mod:`service.db_deadline`) must tell a database that does not answer from
a thread that merely did not get a CPU (a loaded machine deschedules it for tens of
milliseconds) or was busy on one. Wall time alone cannot: only the time the thread spent
blocked in the kernel (waiting on a socket, a file, a sleep) says the database is slow.

On Linux, ``/proc/self/task/<tid>/schedstat`` gives, in nanoseconds, the time a thread
ran on a CPU and the time it waited on a run queue; what is left of the wall time is the time
it was blocked (or stopped). Its ``stat`` says whether it is running or runnable now, and its
``wchan`` what it is blocked on: ``futex_*`` is a lock of this process (the GIL, most often,
held by a thread that is itself waiting for a CPU), not the database. A read costs about
1.5 µs (``pread`` on a descriptor kept open). Elsewhere only the thread's CPU clock is
known (``time.pthread_getcpuclockid``), without the run-queue wait, and nothing of what it
waits on.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import suppress

_TASKS = "/proc/self/task"


class ThreadActivity:
    """Reads, from any thread, the time one thread has spent on or queued for a CPU."""

    def __init__(self, native_id: int, ident: int) -> None:
        self._schedstat = _open(f"{_TASKS}/{native_id}/schedstat")
        self._stat = _open(f"{_TASKS}/{native_id}/stat")
        self._wchan = _open(f"{_TASKS}/{native_id}/wchan")
        self._clock: int | None = None
        if self._schedstat is None:
            with suppress(AttributeError, OSError):  # not on this platform
                self._clock = time.pthread_getcpuclockid(ident)

    @classmethod
    def of_current(cls) -> ThreadActivity:
        return cls(threading.get_native_id(), threading.get_ident())

    def active(self) -> float:
        """Seconds the thread has run or been runnable (waiting for a CPU) so far; 0.0 when
        nothing is known (the caller then takes all of the wall time as blocked)."""
        if self._schedstat is not None:
            with suppress(OSError, ValueError, IndexError):
                fields = os.pread(self._schedstat, 64, 0).split()
                return (int(fields[0]) + int(fields[1])) / 1e9
            return 0.0
        if self._clock is not None:
            with suppress(OSError):
                return time.clock_gettime(self._clock)
        return 0.0

    def blocked_on_io(self) -> bool:
        """Whether the thread is blocked now on something other than a lock of this process
        (true when that cannot be known: then only the time it was blocked tells)."""
        if self._stat is not None:
            with suppress(OSError):
                stat = os.pread(self._stat, 512, 0)
                if stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"R":
                    return False  # running, or runnable and waiting for a CPU
        if self._wchan is not None:
            with suppress(OSError):
                return not os.pread(self._wchan, 64, 0).startswith(b"futex")
        return True

    def close(self) -> None:
        for fd in (self._schedstat, self._stat, self._wchan):
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)
        self._schedstat = self._stat = self._wchan = None


def _open(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
