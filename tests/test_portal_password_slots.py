"""A flood of sign-ins cannot run more argon2id hashes at once than portal.passwords allows
(each takes 64 MiB): the others wait their turn and still get the right answer."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from argon2 import PasswordHasher

from portal import passwords


class CountingHasher:
    """The real hasher, counting how many of its hashes overlap."""

    def __init__(self) -> None:
        self.real = PasswordHasher()
        self.lock = threading.Lock()
        self.busy = 0
        self.peak = 0

    def _run(self, work, *args):  # type: ignore[no-untyped-def]
        with self.lock:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
        try:
            return work(*args)
        finally:
            with self.lock:
                self.busy -= 1

    def verify(self, stored: str, password: str) -> bool:
        return self._run(self.real.verify, stored, password)

    def hash(self, password: str) -> str:
        return self._run(self.real.hash, password)


def test_at_most_hash_slots_hashes_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = PasswordHasher().hash("Correct-Horse-Battery-9")
    counting = CountingHasher()
    monkeypatch.setattr(passwords, "_hasher", lambda: counting)
    attempts = ["Correct-Horse-Battery-9" if i % 3 == 0 else f"wrong-{i}" for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda p: passwords.verify_password(stored, p), attempts))
    assert results == [p == "Correct-Horse-Battery-9" for p in attempts]
    assert 1 <= counting.peak <= passwords.HASH_SLOTS
