"""SFTP clients for book-of-business files: ``olv bob push`` and ``olv bob fetch`` (asyncssh).

Both authenticate with keys only and check the server's host key against a known_hosts file
(``~/.ssh/known_hosts`` unless one is named); skipping that check is an explicit lab-only option.

Both also make a file appear under its final name only once it is complete: ``push`` uploads to
``.<name>.part`` and renames on the server, ``fetch`` downloads to ``.<name>.part`` and renames
locally — so a watcher on either side (``olv bob watch``) never picks up half a file.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import posixpath
import re
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.utils import CryptographyDeprecationWarning

with warnings.catch_warnings():
    # asyncssh names cryptography's DSA key types when it loads, and cryptography 51 warns on
    # the name alone; OLV never uses a DSA key.
    warnings.filterwarnings("ignore", "DSA is deprecated", CryptographyDeprecationWarning)
    import asyncssh

from bob_loader.intake_claims import is_temp_name
from olv.errors import OlvError

log = logging.getLogger(__name__)

STATE_FILE = ".olv-fetch-state.json"
LOCK_FILE = ".olv-fetch.lock"

# USER@HOST:PATH, HOST may be a bracketed IPv6 address.
_TARGET = re.compile(
    r"^(?P<user>[^@/\s]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@/\s\[\]]+):(?P<path>.*)$"
)

# What a caller of push/fetch may need to catch: connection, authentication, host key, SFTP.
SftpFailure = (asyncssh.Error, asyncssh.KeyImportError, OSError, asyncio.TimeoutError)


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

    def connect_kwargs(self, target: SftpTarget) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": target.host,
            "port": self.port,
            "username": target.user,
            "preferred_auth": "publickey",
            "password_auth": False,
            "kbdint_auth": False,
            "connect_timeout": self.connect_timeout,
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


# --- push -----------------------------------------------------------------------------------


def push(file: Path, target: SftpTarget, options: SshOptions) -> str:
    """Upload ``file``; returns the remote path it now has."""
    return asyncio.run(_push(file, target, options))


async def _push(file: Path, target: SftpTarget, options: SshOptions) -> str:
    async with (
        asyncssh.connect(**options.connect_kwargs(target)) as conn,
        conn.start_sftp_client() as sftp,
    ):
        if target.path.endswith("/") or await sftp.isdir(target.path):
            final = posixpath.join(target.path, file.name)
        else:
            final = target.path
        directory, name = posixpath.split(final)
        temp = posixpath.join(directory, f".{name}.part")
        await sftp.put(str(file), temp)
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
    async with (
        asyncssh.connect(**options.connect_kwargs(target)) as conn,
        conn.start_sftp_client() as sftp,
    ):
        listed = _remote_files(await sftp.readdir(target.path))
        new = {n: v for n, v in listed.items() if state.entries.get(prefix + n) != _entry(v)}
        done = {n for n in listed if n not in new}
        if new and settle_seconds > 0:
            # A file still being uploaded to the server changes size or mtime meanwhile.
            await asyncio.sleep(settle_seconds)
            again = _remote_files(await sftp.readdir(target.path))
            result.skipped += sum(1 for n, v in new.items() if again.get(n) != v)
            new = {n: v for n, v in new.items() if again.get(n) == v}
        result.skipped += len(done)
        for name, (size, mtime) in sorted(new.items()):
            remote = posixpath.join(target.path, name)
            temp = to_dir / f".{name}.part"
            await sftp.get(remote, str(temp))
            if temp.stat().st_size != size:
                temp.unlink()  # changed while we read it: next run
                result.skipped += 1
                continue
            # The remote mtime tells the watcher the file is not being written any more.
            os.utime(temp, (mtime, mtime))
            os.replace(temp, to_dir / name)
            state.entries[prefix + name] = _entry((size, mtime))
            state.save()
            result.fetched.append(name)
            done.add(name)
        if delete:
            for name in sorted(done):
                await sftp.remove(posixpath.join(target.path, name))
                result.deleted.append(name)
    # Forget files that left the server, so the state file does not grow without end.
    for key in [k for k in state.entries if k.startswith(prefix)]:
        if key[len(prefix) :] not in listed or key[len(prefix) :] in result.deleted:
            del state.entries[key]
    state.save()
    return result


def _entry(value: tuple[int, int]) -> dict[str, int]:
    return {"size": value[0], "mtime": value[1]}
