"""Reading input line by line with a length cap.

A file without line breaks (or with one absurdly long line) must never be read into memory
whole: every reader of BoB, CSV or VIN-list input takes its lines from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

_SKIP_CHUNK = 1 << 16


def capped_lines(stream: BinaryIO, limit: int) -> Iterator[tuple[int, bytes, bool]]:
    """``(line number, bytes, overlong)`` for each line, the line break included when present.

    A line longer than ``limit`` bytes comes back cut to its first ``limit`` bytes with
    ``overlong`` set; the rest of it is skipped in fixed-size chunks, never held. Choose
    ``limit`` well above any legitimate line: a line of exactly ``limit`` bytes counts as
    overlong.
    """
    readline = stream.readline
    number = 0
    while raw := readline(limit):
        number += 1
        overlong = len(raw) == limit and not raw.endswith(b"\n")
        if overlong:
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = readline(_SKIP_CHUNK)
        yield number, raw, overlong
