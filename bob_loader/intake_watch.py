"""The watch loop of ``olv bob watch``: one watcher per directory, pickup in the calling thread,
loads in one worker thread (see :mod:`bob_loader.intake` for what a round does)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bob_loader.intake import Intake, describe
from olv.errors import OlvError

log = logging.getLogger("bob_loader.intake")


class WatcherBusy(OlvError):
    """Another watcher holds the intake directory."""


@contextmanager
def exclusive(base: Path) -> Iterator[None]:
    """One watcher per intake directory: two would race for the same uploads.

    The lock is taken on the directory itself, which the watcher may not be allowed to write.
    """
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise WatcherBusy(f"another watcher is running on {base}") from exc
        yield
    finally:
        os.close(fd)


def watch(
    intake: Intake, *, poll_seconds: float, stop: threading.Event, once: bool = False
) -> bool:
    """Run until ``stop`` is set (or one round with ``once``); False if anything failed.

    The calling thread picks up; a worker thread loads and finishes. On ``stop`` the worker
    finishes the file in hand, and what is still claimed waits on disk for the next start.
    """
    with exclusive(intake.base):
        if once:
            intake.run_round(stop)
            return intake.failures == 0
        work = threading.Event()
        crashed: list[BaseException] = []
        worker = threading.Thread(
            target=_work,
            args=(intake, work, stop, poll_seconds, crashed),
            name="bob-load",
            daemon=True,
        )
        worker.start()
        try:
            while not stop.is_set():
                if intake.pick_up(stop):
                    work.set()
                stop.wait(poll_seconds)
        finally:
            stop.set()
            work.set()
            worker.join()
        if crashed:
            raise crashed[0]
        return intake.failures == 0


def _work(
    intake: Intake,
    work: threading.Event,
    stop: threading.Event,
    poll: float,
    crashed: list[BaseException],
) -> None:
    """The load worker: process what is claimed whenever woken (or every poll, for retries).

    Should it die, it stops the watcher, which re-raises its error: a watcher that claims
    files nobody loads must not keep running.
    """
    try:
        while not stop.is_set():
            work.clear()
            try:
                intake.process_pending(stop)
            except OSError as exc:  # the intake directory itself is unreadable: try again later
                intake.failures += 1
                log.error("processing pass failed", extra=describe(exc))
            work.wait(poll)
    except BaseException as exc:
        crashed.append(exc)
        stop.set()
