"""Instructions per verification of the portal's process, beside the insurer service's per
request it answers, both counted by callgrind: the portal's CPU ratio (issue 17's
``portal / insurer <= 1.5x``) in a figure that the machine's load and speed cannot move.

    python bench/portal_instructions.py [--db sqlite|postgresql] [--calls 600]

Two rounds on the same seeded databases (``portal_bench.prepare``: the state's book of
business, an insurer registered, API tokens). In each round one server runs under callgrind
with counting off and the other runs plainly: first ``olv portal serve`` (one process), then
``olv soap serve --workers 1``. After a warm-up, counting is switched on for ``--calls``
verifications sent one at a time through the portal's ``POST /api/v1/verify`` (so each runs
alone, as at a few hundred a second, not batched with others), then off. Only user-space
instructions of the counted process are in a figure (its threads included): not the kernel's
share (the socket calls), nor the database's work in other processes. The portal's figure
holds everything it does for a verification: HTTP, the token, the rate limit's statement, the
insurer's call, the query log. Needs ``valgrind``; a run takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import callgrind
import httpx
import portal_bench
from procstat import code_revision
from scratch_db import DEFAULT_PG_URL
from servers import free_port, start_server

VEHICLES = 2000
CLIENTS = 4
WARMUP = 200
START_SECONDS = 600  # a server's start-up under valgrind


@contextmanager
def _served(
    name: str, command: list[str], env: dict[str, str], port: int, folder: Path, counted: bool
) -> Iterator[None]:
    """``command`` serving on ``port``, its output in ``folder/NAME.log``; under callgrind
    (counting off, dumps in ``folder``) when ``counted``."""
    if counted:
        command = callgrind.command(folder, command)
        env = {**env, **callgrind.ENV}
    server = start_server(
        name, command, {**os.environ, **env}, folder, port=port, wait_seconds=START_SECONDS
    )
    try:
        yield
    finally:
        server.stop(120)


def _verify(client: httpx.Client, tokens: list[str], count: int, offset: int) -> None:
    for i in range(count):
        vin = portal_bench.vin((offset + i * 7) % VEHICLES)
        answer = client.post(
            "/api/v1/verify",
            content=b'{"vin": "%s"}' % vin.encode(),
            headers={
                "Authorization": f"Bearer {tokens[i % len(tokens)]}",
                "Content-Type": "application/json",
            },
        )
        if answer.status_code != 200 or b'"confirmed"' not in answer.content:
            sys.exit(f"verification {i} failed: {answer.status_code} {answer.text[:300]}")


def _round(
    counted: str,
    state_url: str,
    insurer_env: dict[str, str],
    tokens: list[str],
    calls: int,
    soap_port: int,
    workdir: Path,
) -> float:
    """Instructions per verification of ``counted`` (``portal`` or ``insurer``)."""
    folder = workdir / counted
    folder.mkdir()
    portal_port = free_port()
    soap = [sys.executable, "-m", "olv", "soap", "serve", "--workers", "1"]
    portal = [sys.executable, "-m", "olv", "portal", "serve"]
    portal_env = {
        "OLV_DATABASE_URL": state_url,
        "OLV_PORTAL_TOKEN_RATE_PER_MINUTE": "10000000",
        "OLV_PORTAL_WORKERS": "1",
        "OLV_PORTAL_SECRET_KEY": secrets.token_urlsafe(32),
    }
    with (
        _served("soap", soap, insurer_env, soap_port, folder, counted == "insurer"),
        _served("portal", portal, portal_env, portal_port, folder, counted == "portal"),
        httpx.Client(base_url=f"http://127.0.0.1:{portal_port}", timeout=60) as client,
    ):
        _verify(client, tokens, WARMUP, 0)
        time.sleep(2)  # the warm-up's log rows written before counting starts
        with callgrind.counting():
            _verify(client, tokens, calls, 3)
            time.sleep(1)  # and this round's, inside the count
    return callgrind.per_call(folder, calls, f"the {counted}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("OLV_BENCH_PG_URL", DEFAULT_PG_URL))
    parser.add_argument("--calls", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="olv-portal-instructions-") as tmp:
        workdir = Path(tmp)
        insurer_env = {"OLV_DATABASE_URL": f"sqlite:///{workdir / 'insurer.db'}"}
        with (
            portal_bench.state_database(args.db, workdir, args.pg_url) as state_url,
            portal_bench.hung_socket() as hung_port,
        ):
            soap_port = free_port()
            tokens = portal_bench.prepare(
                state_url,
                insurer_env,
                f"http://127.0.0.1:{soap_port}",
                hung_port,
                VEHICLES,
                CLIENTS,
                workdir,
            )
            figures = {
                counted: _round(
                    counted, state_url, insurer_env, tokens, args.calls, soap_port, workdir
                )
                for counted in ("portal", "insurer")
            }
    ratio = figures["portal"] / figures["insurer"]
    print(
        f"portal instructions ({args.db}, {args.calls} verifications one at a time,"
        f" {date.today()}, {code_revision()})\n"
        f"  portal:  {figures['portal']:>12,.0f} per verification\n"
        f"  insurer: {figures['insurer']:>12,.0f} per request it answers\n"
        f"  portal / insurer: {ratio:.2f}x (issue 17's CPU target <= 1.5x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
