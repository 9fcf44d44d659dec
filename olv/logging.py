"""Structured logging: one JSON object per line on stderr.

Log records carry operational facts (counts, timings, codes, requester identity), never an
insured's personal data: callers pass such values in the audit table, not in log messages.
A line written while a request is handled carries its id (``request_id``, :mod:`olv.request_id`).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from olv import request_id

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.current.get()
        if rid is not None:
            entry["request_id"] = rid
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info and record.exc_info[1] is not None:
            entry.update(describe_exception(record.exc_info[1]))
        return json.dumps(entry, default=str)


def describe_exception(exc: BaseException) -> dict[str, str]:
    """An exception as log fields: its type and where it was raised, never its message.

    Messages of library exceptions quote the values they choked on (a date column holding
    garbage, a driver error with its statement parameters), and those values can be a VIN or
    a policy number: the type and the frames are enough to find the fault.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    chain = [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]
    return {"error": type(exc).__qualname__, "where": " < ".join(reversed(chain))}


def configure(level: str = "INFO") -> None:
    """Called by entry points only (never at import)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Spyne logs whole request bodies at DEBUG and stack traces for client faults at ERROR:
    # both could carry insured data, so keep it quiet.
    logging.getLogger("spyne").setLevel(logging.CRITICAL)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
