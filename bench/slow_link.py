"""A database on another host, on one machine: a loopback TCP proxy that holds every chunk
for a while in each direction, so that a round trip through it costs twice that.

    python bench/slow_link.py --listen 6543 --target 127.0.0.1:5432 --delay-ms 0.5

then point a bench at it (``soap_bench.py --db postgresql --pg-url
postgresql+psycopg://postgres@127.0.0.1:6543/postgres``). The order of the bytes is kept;
only their time changes. A thread per direction sleeps out each chunk's delay (an event
loop's timers count in whole milliseconds); it runs as a process of its own, so its CPU is
not the server's. At start it prints the round trip of ``SELECT 1`` through it.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
import time


def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
    try:
        while chunk := src.recv(65536):
            time.sleep(delay)
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _connect(client: socket.socket, target: tuple[str, int], delay: float) -> None:
    try:
        upstream = socket.create_connection(target, timeout=5)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    for sock in (client, upstream):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for src, dst in ((client, upstream), (upstream, client)):
        threading.Thread(target=_pipe, args=(src, dst, delay), daemon=True).start()


def _round_trip_ms(port: int) -> float:
    import psycopg

    with psycopg.connect(
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True
    ) as conn:
        for _ in range(10):
            conn.execute("SELECT 1")
        started = time.perf_counter()
        for _ in range(100):
            conn.execute("SELECT 1")
        return (time.perf_counter() - started) * 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, default=6543)
    parser.add_argument("--target", default="127.0.0.1:5432")
    parser.add_argument("--delay-ms", type=float, default=0.5, help="each way")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    listener = socket.create_server(("127.0.0.1", args.listen))
    threading.Thread(
        target=lambda: print(
            f"slow link 127.0.0.1:{args.listen} -> {args.target}, {args.delay_ms} ms each way;"
            f" SELECT 1 through it: {_round_trip_ms(args.listen):.2f} ms",
            flush=True,
        ),
        daemon=True,
    ).start()
    while True:
        client, _ = listener.accept()
        _connect(client, (host, int(port)), args.delay_ms / 1000)


if __name__ == "__main__":
    main()
