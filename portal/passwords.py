"""Passwords: argon2id hashes, at least 12 characters, not on the common-password list.

The list (``common_passwords.txt`` beside this module) holds well-known passwords long enough
to pass the length rule; the comparison ignores case.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from olv.errors import OlvError

MIN_LENGTH = 12
MAX_LENGTH = 256  # argon2 takes any length; a cap keeps a login from costing more than it should
# Each argon2id hash takes 64 MiB (the library's default, RFC 9106's second choice). A flood of
# sign-ins on the server's 40 worker threads would take 2.5 GiB at once; every hash runs on
# this pool of HASH_SLOTS threads and the others wait their turn in its queue (two cores cannot
# run more anyway). The sign-in page waits with ``await`` (:func:`verify_password_async`), so a
# sign-in waiting for a slot holds none of the threads that session and token checks need.
HASH_SLOTS = 4
_pool = ThreadPoolExecutor(HASH_SLOTS, thread_name_prefix="argon2")


class WeakPasswordError(OlvError):
    """The password breaks a rule; the message says which, never the password itself."""


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with the library's current recommended parameters


@cache
def common_passwords() -> frozenset[str]:
    text = Path(__file__).with_name("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def check_strength(password: str, username: str | None = None) -> None:
    if len(password) < MIN_LENGTH:
        raise WeakPasswordError(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPasswordError(f"password must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in common_passwords():
        raise WeakPasswordError("password is on the list of common passwords")
    if len(set(password)) < 4:
        raise WeakPasswordError("password repeats too few different characters")
    if username and username.lower() in lowered:
        raise WeakPasswordError("password must not contain the user name")


def hash_password(password: str, username: str | None = None) -> str:
    """Check the rules, then hash with argon2id; raises :class:`WeakPasswordError`."""
    check_strength(password, username)
    return _pool.submit(_hash, password).result()


def verify_password(stored_hash: str, password: str) -> bool:
    return _pool.submit(_verify, stored_hash, password).result()


async def verify_password_async(stored_hash: str, password: str) -> bool:
    """:func:`verify_password` for the event loop: waits for a slot without a thread."""
    return await asyncio.get_running_loop().run_in_executor(_pool, _verify, stored_hash, password)


def _hash(password: str) -> str:
    return _hasher().hash(password)


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher().check_needs_rehash(stored_hash)


# A valid hash of nothing anyone can type, to verify against when the user does not exist
# (so a login for an unknown name costs as much time as one for a known name).
def dummy_hash() -> str:
    return _dummy()


@cache
def _dummy() -> str:
    return _pool.submit(_hash, "\x00 no such user \x00").result()
