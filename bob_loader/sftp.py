"""SFTP clients for book-of-business files: ``olv bob push`` and ``olv bob fetch`` (asyncssh).

Both authenticate with keys only and check the server's host key against a known_hosts file
(``~/.ssh/known_hosts`` unless one is named); skipping that check is an explicit lab-only option.

Both also make a file appear under its final name only once it is complete: ``push`` uploads to
a temporary name (:func:`temp_name`) and renames on the server, ``fetch`` downloads to one and
renames locally — so a watcher on either side (``olv bob watch``) never picks up half a file.

Neither waits for ever on a peer that stops answering: keepalives find a peer that vanished,
and a step that makes no progress for :data:`STALL_SECONDS`, or a run longer than
:data:`RUN_SECONDS`, fails with :class:`SftpStalled` (a fetch leaves no partial download).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import re
import stat
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # asyncssh names cryptography's DSA key types when it loads, and cryptography 51 warns on
    # the name alone; OLV never uses a DSA key.
    warnings.filterwarnings("ignore", "DSA is deprecated", CryptographyDeprecationWarning)
    import asyncssh

from bob_loader.intake_claims import is_temp_name, safe_name
from olv.errors import OlvError

log = logging.getLogger(__name__)

STATE_FILE = ".olv-fetch-state.json"
LOCK_FILE = ".olv-fetch.lock"

# USER@HOST:PATH, HOST may be a bracketed IPv6 address.
_TARGET = re.compile(
    r"^(?P<user>[^@/\s]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@/\s\[\]]+):(?P<path>.*)$"
)

# A peer that vanishes (link cut, a NAT dropping the flow) sends nothing, not even a reset: an
# SSH keepalive every 15 s, 4 of them unanswered, ends the connection after about a minute.
KEEPALIVE_SECONDS = 15.0
KEEPALIVE_COUNT_MAX = 4
# A peer that stays connected but stops serving (a hung SFTP server) answers keepalives: so each
# step — a listing, a rename, a transfer that moves no byte — fails after this long without
# progress. A slow transfer that keeps moving is left alone...
STALL_SECONDS = 60.0
# ...up to this limit on a whole push or fetch run, so a trickle cannot hold the fetch lock
# (and keep every later cron run out) for ever.
RUN_SECONDS = 4 * 3600.0

# What a caller of push/fetch may need to catch: connection, authentication, host key, SFTP.
SftpFailure = (asyncssh.Error, asyncssh.KeyImportError, OSError, asyncio.TimeoutError)


class SftpStalled(TimeoutError):
    """The peer stopped making progress, or the run took too long; the run was given up."""


class FetchBusy(OlvError):
    """Another ``olv bob fetch`` is writing into the same directory."""


@dataclass(frozen=True, slots=True)
class SftpTarget:
    user: str
    host: str
    path: str

    @classmethod
    def parse(cls, spec: str) -> SftpTarget:
        match = _TARGET.match(spec)
        if match is None:
            raise ValueError(f"expected USER@HOST:PATH, got {spec!r}")
        host = match["host"].strip("[]")
        return cls(match["user"], host, match["path"] or ".")


@dataclass(frozen=True, slots=True)
class SshOptions:
    port: int = 22
    key: Path | None = None  # None: the user's default keys and agent
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    insecure_accept_any_host_key: bool = False
    connect_timeout: float = 30.0
    stall_seconds: float | None = None  # None: STALL_SECONDS (read when used)
    run_seconds: float | None = None  # None: RUN_SECONDS

    @property
    def stall_limit(self) -> float:
        return STALL_SECONDS if self.stall_seconds is None else self.stall_seconds

    @property
    def run_limit(self) -> float:
        return RUN_SECONDS if self.run_seconds is None else self.run_seconds

    def connect_kwargs(self, target: SftpTarget) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": target.host,
            "port": self.port,
            "username": target.user,
            "preferred_auth": "publickey",
            "password_auth": False,
            "kbdint_auth": False,
            "connect_timeout": self.connect_timeout,
            "keepalive_interval": KEEPALIVE_SECONDS,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
            # No ~/.ssh/config: what is checked and where we connect is what the command says.
            "config": None,
        }
        if self.key is not None:
            kwargs["client_keys"] = [str(self.key)]
            kwargs["agent_path"] = None
        if self.insecure_accept_any_host_key:
            kwargs["known_hosts"] = None
        elif self.known_hosts is not None:
            kwargs["known_hosts"] = str(self.known_hosts)
        return kwargs


def temp_name(name: str) -> str:
    """The temporary name a transfer of ``name`` is written under: hidden, ignored by watchers
    (:func:`bob_loader.intake_claims.is_temp_name`) and short whatever the length of ``name``
    (``.<name>.part`` would not fit the file system for a name near its 255-byte limit)."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f".olv-{digest}.part"


class _Session:
    """One SFTP connection with a watchdog: a step (:meth:`step`) that makes no progress for
    the stall limit, or a run past the run limit, aborts the connection.

    Aborting, not cancelling: asyncssh cleans up a cancelled transfer by closing its remote
    file, and a hung server never answers that either. An abort fails every request at once.
    """

    def __init__(self, conn: asyncssh.SSHClientConnection, options: SshOptions, what: str):
        self.conn = conn
        self.stall = options.stall_limit
        self.sftp: asyncssh.SFTPClient | None = None
        self.fired: str | None = None  # why the watchdog aborted the connection
        loop = asyncio.get_running_loop()
        limit = options.run_limit
        self._run = loop.call_later(limit, self._abort, f"{what} did not finish within {limit:g} s")

    def _abort(self, reason: str) -> None:
        if self.fired is None:
            self.fired = f"{reason}; given up"
            self.conn.abort()

    def close(self) -> None:
        self._run.cancel()

    def failure(self, exc: BaseException) -> BaseException:
        """What to raise for ``exc``: the watchdog's reason when it caused it."""
        return SftpStalled(self.fired) if self.fired is not None else exc

    @asynccontextmanager
    async def step(self, what: str) -> AsyncIterator[Callable[..., None]]:
        """Yields a progress handler (asyncssh calls it for every block a transfer moves)
        that moves the step's deadline back."""
        loop = asyncio.get_running_loop()
        reason = f"the server made no progress for {self.stall:g} s while {what}"
        timer = loop.call_later(self.stall, self._abort, reason)

        def progress(*_args: object) -> None:
            nonlocal timer
            timer.cancel()
            timer = loop.call_later(self.stall, self._abort, reason)

        try:
            yield progress
        except Exception as exc:
            failure = self.failure(exc)
            if failure is exc:
                raise
            raise failure from None
        finally:
            timer.cancel()
        if self.fired is not None:  # the step finished, but the connection is gone
            raise SftpStalled(self.fired)


@asynccontextmanager
async def _session(target: SftpTarget, options: SshOptions, what: str) -> AsyncIterator[_Session]:
    conn = await asyncssh.connect(**options.connect_kwargs(target))
    session = _Session(conn, options, what)
    try:
        async with session.step("starting SFTP"):
            session.sftp = await conn.start_sftp_client()
        yield session
    except BaseException:
        # A failed or stalled peer: drop the connection now; a polite close would wait for it.
        conn.abort()
        raise
    finally:
        session.close()
    session.sftp.exit()
    conn.close()
    async with session.step("closing the connection"):
        await conn.wait_closed()


# --- push -----------------------------------------------------------------------------------


def push(file: Path, target: SftpTarget, options: SshOptions) -> str:
    """Upload ``file``; returns the remote path it now has."""
    return asyncio.run(_push(file, target, options))


async def _push(file: Path, target: SftpTarget, options: SshOptions) -> str:
    async with _session(target, options, "the push") as session:
        sftp = session.sftp
        assert sftp is not None
        async with session.step("looking at the remote path"):
            is_dir = target.path.endswith("/") or await sftp.isdir(target.path)
        final = posixpath.join(target.path, file.name) if is_dir else target.path
        directory, name = posixpath.split(final)
        temp = posixpath.join(directory, temp_name(name))
        # Should the upload stall, its part stays under the temporary name, which no watcher
        # picks up and the next push of the file overwrites.
        async with session.step(f"uploading {safe_name(file.name)}") as progress:
            await sftp.put(str(file), temp, progress_handler=progress)
        async with session.step("renaming the upload into place"):
            try:
                await _rename_into_place(sftp, temp, final)
            except asyncssh.SFTPError:
                await sftp.remove(temp)
                raise
        log.info("pushed", extra={"file": file.name, "remote": final, "host": target.host})
        return final


async def _rename_into_place(sftp: asyncssh.SFTPClient, temp: str, final: str) -> None:
    # posix-rename@openssh.com replaces an existing file atomically; plain SFTP v3 rename
    # refuses to overwrite, which is still safe (the upload stays complete under its temp name
    # until removed below).
    try:
        await sftp.posix_rename(temp, final)
    except asyncssh.SFTPOpUnsupported:
        await sftp.rename(temp, final)


# --- fetch ----------------------------------------------------------------------------------


@dataclass(slots=True)
class FetchResult:
    fetched: list[str] = field(default_factory=list)
    skipped: int = 0  # already fetched earlier, or still changing on the server
    deleted: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FetchState:
    """Remote files already fetched into a directory, by name, size and mtime."""

    path: Path
    entries: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> FetchState:
        path = directory / STATE_FILE
        entries = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, entries)

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.entries, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Overlapping cron runs would download the same files twice: allow one at a time."""
    with (directory / LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise FetchBusy(f"another fetch is running into {directory}") from exc
        yield


def fetch(
    target: SftpTarget,
    to_dir: Path,
    options: SshOptions,
    *,
    delete: bool = False,
    settle_seconds: float = 5.0,
) -> FetchResult:
    """Download the completed files of the remote directory ``target.path`` into ``to_dir``."""
    to_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(to_dir):
        state = FetchState.load(to_dir)
        return asyncio.run(_fetch(target, to_dir, options, state, delete, settle_seconds))


def _remote_files(names: list[asyncssh.SFTPName]) -> dict[str, tuple[int, int]]:
    files = {}
    for entry in names:
        name = str(entry.filename)
        mode = entry.attrs.permissions
        if is_temp_name(name) or "/" in name or mode is None or not stat.S_ISREG(mode):
            continue
        files[name] = (entry.attrs.size or 0, int(entry.attrs.mtime or 0))
    return files


async def _fetch(
    target: SftpTarget,
    to_dir: Path,
    options: SshOptions,
    state: FetchState,
    delete: bool,
    settle_seconds: float,
) -> FetchResult:
    result = FetchResult()
    prefix = f"{target.user}@{target.host}:{options.port}:{target.path.rstrip('/')}/"
    async with _session(target, options, "the fetch") as session:
        sftp = session.sftp
        assert sftp is not None
        async with session.step("listing the remote directory"):
            listed = _remote_files(await sftp.readdir(target.path))
        new = {n: v for n, v in listed.items() if state.entries.get(prefix + n) != _entry(v)}
        done = {n for n in listed if n not in new}
        if new and settle_seconds > 0:
            # A file still being uploaded to the server changes size or mtime meanwhile.
            await asyncio.sleep(settle_seconds)
            async with session.step("listing the remote directory"):
                again = _remote_files(await sftp.readdir(target.path))
            result.skipped += sum(1 for n, v in new.items() if again.get(n) != v)
            new = {n: v for n, v in new.items() if again.get(n) == v}
        result.skipped += len(done)
        name_max = os.pathconf(to_dir, "PC_NAME_MAX")
        for name, (size, mtime) in sorted(new.items()):
            if len(os.fsencode(name)) > name_max:
                _unstorable(name, result)
                continue
            remote = posixpath.join(target.path, name)
            temp = to_dir / temp_name(name)
            try:
                async with session.step(f"downloading {safe_name(name)}") as progress:
                    await sftp.get(remote, str(temp), progress_handler=progress)
            except BaseException:
                temp.unlink(missing_ok=True)  # never leave half a download behind
                raise
            if temp.stat().st_size != size:
                temp.unlink()  # changed while we read it: next run
                result.skipped += 1
                continue
            # The remote mtime tells the watcher the file is not being written any more.
            os.utime(temp, (mtime, mtime))
            try:
                os.replace(temp, to_dir / name)
            except OSError as exc:
                temp.unlink(missing_ok=True)
                if exc.errno not in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
                    raise
                _unstorable(name, result)
                continue
            state.entries[prefix + name] = _entry((size, mtime))
            state.save()
            result.fetched.append(name)
            done.add(name)
        if delete:
            for name in sorted(done):
                async with session.step("deleting a fetched remote file"):
                    await sftp.remove(posixpath.join(target.path, name))
                result.deleted.append(name)
    # Forget files that left the server, so the state file does not grow without end.
    for key in [k for k in state.entries if k.startswith(prefix)]:
        if key[len(prefix) :] not in listed or key[len(prefix) :] in result.deleted:
            del state.entries[key]
    state.save()
    return result


def _unstorable(name: str, result: FetchResult) -> None:
    # One odd name must not fail the run, or every later file would wait behind it for ever.
    log.warning(
        "remote file skipped: its name cannot be stored here",
        extra={"file": safe_name(name), "name_bytes": len(os.fsencode(name))},
    )
    result.skipped += 1


def _entry(value: tuple[int, int]) -> dict[str, int]:
    return {"size": value[0], "mtime": value[1]}
