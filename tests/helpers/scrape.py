"""Reading ``/metrics`` the way Prometheus does: over HTTP, parsed by prometheus-client."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.helpers import loopback


def scrape(base: str, headers: dict[str, str] | None = None) -> list[Sample]:
    """Every sample (a new connection each time: any worker may answer)."""
    response = loopback.get(f"{base}/metrics", headers=headers or {}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def labelled(samples: list[Sample], name: str) -> list[dict[str, str]]:
    return [s.labels for s in samples if s.name == name]


def log_lines(path: Path) -> list[dict]:
    """The JSON lines of a server's log (other lines, such as the banner, left out)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def outside_address() -> str | None:
    """An address of this machine that is not loopback, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("203.0.113.1", 9))  # no packet is sent: only the route is chosen
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address
