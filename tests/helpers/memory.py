"""Memory bounds in tests: the most Python memory an action held at once."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable


def peak_bytes(action: Callable[[], object]) -> int:
    """Peak of the memory Python allocated while ``action`` ran (tracemalloc)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
