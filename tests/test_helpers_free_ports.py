"""The ports tests start servers on come from below the kernel's ephemeral range (where no
outgoing connection can take one first), from this worker's own slice, never twice."""

from __future__ import annotations

import socket

import pytest

from tests.helpers import free_ports


def test_ports_are_below_the_ephemeral_range_and_not_repeated() -> None:
    ports = [free_ports.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    start = free_ports._ephemeral_start()
    assert all(free_ports.LOWEST <= port < start for port in ports)
    assert all(port in free_ports._slice() for port in ports)


def test_workers_get_slices_that_do_not_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    slices = []
    for index in range(4):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        slices.append(set(free_ports._slice()))
    assert all(len(part) > 1000 for part in slices)
    assert sum(len(part) for part in slices) == len(set().union(*slices))


def test_a_port_something_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:
        port = free_ports.free_port()
        listener.bind(("127.0.0.1", port))
        listener.listen()
        # A slice whose other ports are all handed out already: only the taken one is left.
        slice_ = range(port, port + 100)
        monkeypatch.setattr(free_ports, "_slice", lambda: slice_)
        monkeypatch.setattr(free_ports, "_handed_out", set(slice_[1:]))
        with pytest.raises(RuntimeError, match="no free port"):
            free_ports.free_port()
