"""``olv bob push`` and ``olv bob fetch`` against a real SFTP server (key auth, host keys)."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from bob_loader import sftp as client
from bob_loader.sftp import FetchBusy, SftpTarget, SshOptions
from tests.helpers.sftp_server import (
    SftpServer,
    close_sftp,
    intake_account_server,
    listen_sftp,
    make_keys,
)

OLV = str(Path(sys.executable).with_name("olv"))
OLD = time.time() - 3600


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    with intake_account_server(tmp_path_factory.mktemp("sftp")) as running:
        yield running


@pytest.fixture(autouse=True)
def _empty_account(server: SftpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for sub in ("inbox", "outbox"):
        for path in (server.root / sub).iterdir():
            path.unlink()
    # No test may read or write the real ~/.ssh (known_hosts, keys, agent).
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def options(server: SftpServer, **kw: object) -> SshOptions:
    values: dict[str, object] = {
        "port": server.port,
        "key": server.keys.client_key,
        "known_hosts": server.keys.known_hosts,
    }
    values.update(kw)
    return SshOptions(**values)  # type: ignore[arg-type]


def olv(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    env["HOME"] = str(home)
    return subprocess.run([OLV, *args], capture_output=True, text=True, env=env, timeout=60)


def ssh_args(server: SftpServer, known_hosts: Path | None = None) -> list[str]:
    args = ["--port", str(server.port), "--key", str(server.keys.client_key)]
    if known_hosts is not None:
        args += ["--known-hosts", str(known_hosts)]
    return args


def test_target_parsing() -> None:
    assert SftpTarget.parse("acme@sftp.example:/inbox/") == SftpTarget(
        "acme", "sftp.example", "/inbox/"
    )
    assert SftpTarget.parse("acme@[::1]:inbox") == SftpTarget("acme", "::1", "inbox")
    assert SftpTarget.parse("acme@host:") == SftpTarget("acme", "host", ".")
    for bad in ("host:/inbox", "acme@host", "acme@host/x:/inbox"):
        with pytest.raises(ValueError):
            SftpTarget.parse(bad)


def test_push_uploads_the_file_into_the_inbox(server: SftpServer, tmp_path: Path) -> None:
    file = tmp_path / "Acme 20250101.txt"
    file.write_bytes(b"R" * 300 + b"\r\n")

    done = olv(
        "bob", "push", str(file), "--sftp", server.spec("inbox/"),
        *ssh_args(server, server.keys.known_hosts), home=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "uploaded" in done.stdout
    assert sorted(os.listdir(server.root / "inbox")) == ["Acme 20250101.txt"]
    assert (server.root / "inbox" / "Acme 20250101.txt").read_bytes() == file.read_bytes()


def test_push_never_shows_a_partial_file_under_its_final_name(
    server: SftpServer, tmp_path: Path
) -> None:
    file = tmp_path / "Acme.txt"
    file.write_bytes(os.urandom(24 * 1024 * 1024))
    final = server.root / "inbox" / "Acme.txt"
    seen_sizes: set[int] = set()
    seen_temp = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            names = os.listdir(final.parent)
            if client.temp_name("Acme.txt") in names:
                seen_temp.set()
            if "Acme.txt" in names:
                seen_sizes.add(final.stat().st_size)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        remote = client.push(file, SftpTarget.parse(server.spec("inbox")), options(server))
    finally:
        stop.set()
        watcher.join()

    assert remote == server.remote("inbox/Acme.txt")
    assert seen_temp.is_set(), "the upload should go through the temporary name"
    assert seen_sizes <= {file.stat().st_size}
    assert os.listdir(final.parent) == ["Acme.txt"]


def test_push_to_an_explicit_remote_file_name(server: SftpServer, tmp_path: Path) -> None:
    file = tmp_path / "local.txt"
    file.write_text("x\n")
    client.push(file, SftpTarget.parse(server.spec("inbox/Acme 20250201.txt")), options(server))
    assert os.listdir(server.root / "inbox") == ["Acme 20250201.txt"]


def test_push_refuses_a_server_whose_host_key_is_not_known(
    server: SftpServer, tmp_path: Path
) -> None:
    file = tmp_path / "Acme.txt"
    file.write_text("x\n")

    wrong = olv(
        "bob", "push", str(file), "--sftp", server.spec("inbox/"),
        *ssh_args(server, server.keys.wrong_known_hosts), home=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "Host key is not trusted" in wrong.stderr
    assert "Traceback" not in wrong.stderr

    # No --known-hosts and an empty ~/.ssh: nothing is trusted, so nothing is sent.
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        client.push(
            file, SftpTarget.parse(server.spec("inbox/")), options(server, known_hosts=None)
        )
    assert os.listdir(server.root / "inbox") == []


def test_push_insecure_option_accepts_any_host_key(server: SftpServer, tmp_path: Path) -> None:
    file = tmp_path / "Acme.txt"
    file.write_text("x\n")
    lab = options(server, known_hosts=None, insecure_accept_any_host_key=True)
    client.push(file, SftpTarget.parse(server.spec("inbox/")), lab)
    assert os.listdir(server.root / "inbox") == ["Acme.txt"]


def test_push_refuses_a_client_key_the_server_does_not_know(
    server: SftpServer, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    file = tmp_path / "Acme.txt"
    file.write_text("x\n")
    with pytest.raises(asyncssh.PermissionDenied):
        client.push(file, SftpTarget.parse(server.spec("inbox/")), options(server, key=stranger))
    assert os.listdir(server.root / "inbox") == []


def remote_file(server: SftpServer, name: str, content: bytes, mtime: float = OLD) -> Path:
    path = server.root / "outbox" / name
    path.write_bytes(content)
    os.utime(path, (mtime, mtime))
    return path


def test_fetch_downloads_each_completed_file_once(server: SftpServer, tmp_path: Path) -> None:
    remote_file(server, "a.txt", b"A" * 302)
    remote_file(server, "b.txt", b"B" * 604)
    remote_file(server, ".c.txt.part", b"C" * 10)  # an upload still in progress
    local = tmp_path / "inbox"

    first = olv(
        "bob", "fetch", "--sftp", server.spec("outbox"), "--to", str(local), "--settle", "0",
        *ssh_args(server, server.keys.known_hosts), home=tmp_path,
    )  # fmt: skip

    assert first.returncode == 0, first.stderr
    assert first.stdout.split("\n")[:2] == ["fetched a.txt", "fetched b.txt"]
    assert sorted(p.name for p in local.iterdir() if not p.name.startswith(".")) == [
        "a.txt",
        "b.txt",
    ]
    assert (local / "b.txt").read_bytes() == b"B" * 604
    assert int((local / "a.txt").stat().st_mtime) == int(OLD)  # the watcher may take it at once

    target = SftpTarget.parse(server.spec("outbox"))
    (local / "a.txt").unlink()  # the watcher took it; it must not come back
    again = client.fetch(target, local, options(server), settle_seconds=0)
    assert again.fetched == [] and again.skipped == 2

    remote_file(server, "a.txt", b"a" * 900)  # a corrected file under the same name
    changed = client.fetch(target, local, options(server), settle_seconds=0, delete=True)
    assert changed.fetched == ["a.txt"]
    assert changed.deleted == ["a.txt", "b.txt"]
    assert os.listdir(server.root / "outbox") == [".c.txt.part"]
    assert (local / "a.txt").read_bytes() == b"a" * 900


def test_fetch_leaves_a_file_that_changes_while_settling(
    server: SftpServer, tmp_path: Path
) -> None:
    growing = remote_file(server, "a.txt", b"A" * 302, mtime=time.time())
    remote_file(server, "b.txt", b"B" * 302)
    local = tmp_path / "inbox"

    fetched = threading.Event()

    def append() -> None:
        # Grows until the fetch is over: one write 0.2 s in came before the fetch had even
        # listed the file when connecting took longer than that on a busy machine.
        while not fetched.wait(0.1):
            with growing.open("ab") as out:
                out.write(b"A" * 302)

    writer = threading.Thread(target=append)
    writer.start()
    target = SftpTarget.parse(server.spec("outbox"))
    try:
        result = client.fetch(target, local, options(server), settle_seconds=0.8)
    finally:
        fetched.set()
        writer.join()

    assert result.fetched == ["b.txt"] and result.skipped == 1
    assert client.fetch(target, local, options(server), settle_seconds=0).fetched == ["a.txt"]
    size = (local / "a.txt").stat().st_size
    assert size == growing.stat().st_size and size >= 604  # all of it, grown


def test_fetch_refuses_a_server_whose_host_key_is_not_known(
    server: SftpServer, tmp_path: Path
) -> None:
    remote_file(server, "a.txt", b"A")
    wrong = options(server, known_hosts=server.keys.wrong_known_hosts)
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        client.fetch(SftpTarget.parse(server.spec("outbox")), tmp_path / "in", wrong)
    assert [p.name for p in (tmp_path / "in").iterdir() if not p.name.startswith(".")] == []


def test_fetch_runs_one_at_a_time_per_directory(server: SftpServer, tmp_path: Path) -> None:
    local = tmp_path / "inbox"
    local.mkdir()
    with (local / client.LOCK_FILE).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(FetchBusy):
            client.fetch(SftpTarget.parse(server.spec("outbox")), local, options(server))


# --- a peer that stops answering -------------------------------------------------------------


@dataclass
class StallingServer:
    """A real SSH/SFTP server (asyncssh, loopback) that answers the first block of a file read
    or write and then never again, the connection staying up: a hung SFTP server, which
    keepalives alone cannot tell from a slow one."""

    port: int
    root: Path
    client_key: Path
    user: str = "insurer"

    def target(self, path: str) -> SftpTarget:
        return SftpTarget(self.user, "127.0.0.1", path)

    def options(self, **kw: object) -> SshOptions:
        values: dict[str, object] = {
            "port": self.port,
            "key": self.client_key,
            "insecure_accept_any_host_key": True,
        }
        values.update(kw)
        return SshOptions(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stalling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StallingServer]:
    workdir = tmp_path_factory.mktemp("stalling")
    root = workdir / "root"
    (root / "outbox").mkdir(parents=True)
    (root / "inbox").mkdir()
    keys = make_keys(workdir / "keys", 0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    release = asyncio.run_coroutine_threadsafe(_event(), loop).result(10)

    class Stalling(asyncssh.SFTPServer):
        def __init__(self, chan: asyncssh.SSHServerChannel) -> None:
            super().__init__(chan, chroot=str(root).encode())

        async def read(self, file_obj: object, offset: int, size: int) -> bytes:
            if offset > 0:
                await release.wait()
            return super().read(file_obj, offset, size)  # type: ignore[return-value]

        async def write(self, file_obj: object, offset: int, data: bytes) -> int:
            if offset > 0:
                await release.wait()
            return super().write(file_obj, offset, data)  # type: ignore[return-value]

    acceptor = listen_sftp(loop, 0, keys, Stalling)
    try:
        yield StallingServer(acceptor.sockets[0].getsockname()[1], root, keys.client_key)
    finally:
        loop.call_soon_threadsafe(release.set)
        close_sftp(loop, thread, acceptor)


async def _event() -> asyncio.Event:
    return asyncio.Event()  # made on the server's loop


def _lock_is_free(directory: Path) -> bool:
    with (directory / client.LOCK_FILE).open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@pytest.mark.timeout(90)  # the old client waited for ever
def test_fetch_gives_up_on_a_server_that_stops_answering(
    stalling: StallingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    remote = stalling.root / "outbox" / "Acme 20261201.txt"
    remote.write_bytes(b"X" * 20_000_000)
    os.utime(remote, (OLD, OLD))
    local = tmp_path / "inbox"

    started = time.monotonic()
    with pytest.raises(client.SftpStalled, match=r"no progress for 2 s while downloading Acme"):
        client.fetch(
            stalling.target("/outbox"), local, stalling.options(stall_seconds=2), settle_seconds=0
        )
    assert time.monotonic() - started < 30
    # No half download under any name, and the next cron run is not locked out.
    assert [p.name for p in local.iterdir()] == [client.LOCK_FILE]
    assert _lock_is_free(local)

    # The whole run has a limit too, whatever the steps do.
    with pytest.raises(client.SftpStalled, match=r"the fetch did not finish within 2 s"):
        client.fetch(
            stalling.target("/outbox"),
            local,
            stalling.options(stall_seconds=600, run_seconds=2),
            settle_seconds=0,
        )
    assert [p.name for p in local.iterdir()] == [client.LOCK_FILE]

    # The command fails with a clear line and a non-zero exit code (the limit is a constant).
    from olv.cli import run

    monkeypatch.setattr(client, "STALL_SECONDS", 2.0)
    monkeypatch.setenv("HOME", str(tmp_path))
    capsys.readouterr()
    code = run(
        [
            "bob", "fetch", "--sftp", f"{stalling.user}@127.0.0.1:/outbox", "--to", str(local),
            "--settle", "0", "--port", str(stalling.port), "--key", str(stalling.client_key),
            "--insecure-accept-any-host-key",
        ]
    )  # fmt: skip
    assert code != 0
    assert "fetch from 127.0.0.1 failed: the server made no progress for 2 s" in (
        capsys.readouterr().err
    )
    assert [p.name for p in local.iterdir()] == [client.LOCK_FILE] and _lock_is_free(local)


@pytest.mark.timeout(60)
def test_push_gives_up_on_a_server_that_stops_answering(
    stalling: StallingServer, tmp_path: Path
) -> None:
    file = tmp_path / "Acme 20261201.txt"
    file.write_bytes(b"Y" * 20_000_000)

    started = time.monotonic()
    with pytest.raises(client.SftpStalled, match=r"no progress for 2 s while uploading Acme"):
        client.push(file, stalling.target("/inbox/"), stalling.options(stall_seconds=2))
    assert time.monotonic() - started < 30
    # Never under its final name: a watcher there picks up no half file.
    assert not (stalling.root / "inbox" / file.name).exists()
    assert all(p.name.startswith(".") for p in (stalling.root / "inbox").iterdir())


def test_fetch_takes_a_file_whose_name_is_near_the_length_limit(
    server: SftpServer, tmp_path: Path
) -> None:
    long_name = "A" * 246 + ".txt"  # 250 bytes: legal, but ".<name>.part" is not
    remote_file(server, long_name, b"A" * 302)
    remote_file(server, "Zeta.txt", b"Z" * 302)
    local = tmp_path / "inbox"

    result = client.fetch(
        SftpTarget.parse(server.spec("outbox")), local, options(server), settle_seconds=0
    )

    assert result.fetched == [long_name, "Zeta.txt"]
    assert (local / long_name).read_bytes() == b"A" * 302
    assert not [p for p in local.iterdir() if p.name.endswith(".part")]
    assert len(client.temp_name(long_name).encode()) < 64
