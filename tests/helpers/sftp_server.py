"""A real SFTP server on loopback for the intake tests.

Preferred: OpenSSH ``sshd -D`` with a generated host key, key-only authentication and
``ForceCommand internal-sftp`` — chrooted into the account directory when the test runs as root
and the directory's ancestors are root-owned and not group/world-writable (sshd refuses a
chroot below ``/tmp``; as root we therefore build the tree under ``/run``). Fallback when sshd is
absent (or ``OLV_TEST_SFTP_SERVER=asyncssh``): asyncssh's own SFTP server in a thread, chrooted by
asyncssh. ``SftpServer.describe()`` says which one runs.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from tests.helpers.free_ports import free_port
from tests.helpers.soap import START_SECONDS

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshKeys:
    client_key: Path  # private key the tests authenticate with
    authorized_keys: Path
    host_key: Path
    known_hosts: Path  # trusts host_key for 127.0.0.1 on the server's port
    wrong_known_hosts: Path  # another key for the same host: must be refused


@dataclass(frozen=True)
class SftpServer:
    kind: str  # "openssh" | "asyncssh"
    host: str
    port: int
    user: str
    root: Path  # what the SFTP user sees as "/" when chrooted
    chrooted: bool
    keys: SshKeys

    def remote(self, relative: str) -> str:
        """Server-side path of ``relative`` (below the account root)."""
        base = "/" if self.chrooted else f"{self.root}/"
        return base + relative.lstrip("/")

    def spec(self, relative: str) -> str:
        return f"{self.user}@{self.host}:{self.remote(relative)}"

    def describe(self) -> str:
        how = "chroot" if self.chrooted else "no chroot"
        return f"SFTP server: {self.kind} on {self.host}:{self.port} ({how})"


def chroot_safe(path: Path) -> bool:
    """sshd's rule for ChrootDirectory: every component root-owned, not group/world-writable."""
    for part in [path, *path.parents]:
        st = part.stat()
        if st.st_uid != 0 or st.st_mode & 0o022:
            return False
    return True


@contextmanager
def intake_root(tmp_path: Path) -> Iterator[Path]:
    """A directory for the intake tree where a chroot can work if we are root."""
    if os.geteuid() == 0 and not chroot_safe(tmp_path) and chroot_safe(Path("/run")):
        base = Path(tempfile.mkdtemp(prefix="olv-test-intake-", dir="/run"))
        try:
            yield base
        finally:
            shutil.rmtree(base, ignore_errors=True)
    else:
        yield tmp_path


def make_keys(workdir: Path, port: int) -> SshKeys:
    workdir.mkdir(parents=True, exist_ok=True)
    client = asyncssh.generate_private_key("ssh-ed25519")
    host = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    keys = SshKeys(
        client_key=workdir / "client_ed25519",
        authorized_keys=workdir / "authorized_keys",
        host_key=workdir / "host_ed25519",
        known_hosts=workdir / "known_hosts",
        wrong_known_hosts=workdir / "known_hosts.wrong",
    )
    client.write_private_key(str(keys.client_key))
    host.write_private_key(str(keys.host_key))
    for path in (keys.client_key, keys.host_key):
        path.chmod(0o600)  # sshd and ssh clients refuse keys others can read
    keys.authorized_keys.write_bytes(client.export_public_key())
    pattern = f"[127.0.0.1]:{port}"
    keys.known_hosts.write_text(f"{pattern} {host.export_public_key().decode().strip()}\n")
    keys.wrong_known_hosts.write_text(f"{pattern} {other.export_public_key().decode().strip()}\n")
    return keys


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log else ""
            raise RuntimeError(f"sshd exited with {proc.returncode}: {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no SSH server answered on port {port}")


def _sshd_config(
    workdir: Path, port: int, keys: SshKeys, user: str, chroot: Path | None, force_command: str
) -> Path:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {keys.host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {keys.authorized_keys}",
        "StrictModes no",  # the key files live in the test's temporary directory
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
        f"Match User {user}",
        f"    ForceCommand {force_command}",
        "    AllowTcpForwarding no",
        "    X11Forwarding no",
    ]
    if chroot is not None:
        lines.append(f"    ChrootDirectory {chroot}")
    config = workdir / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config


@contextmanager
def _openssh(account_root: Path, workdir: Path, force_command: str) -> Iterator[SftpServer]:
    user = pwd.getpwuid(os.geteuid()).pw_name  # sshd only lets a non-root run log in as itself
    port = free_port()
    keys = make_keys(workdir, port)
    chroot = None
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        if chroot_safe(account_root):
            chroot = account_root
    if chroot is None:
        # A start directory such as ``-d /inbox`` only exists inside the chroot.
        words = force_command.split()
        if "-d" in words:
            at = words.index("-d")
            del words[at : at + 2]
        force_command = " ".join(words)
    config = _sshd_config(workdir, port, keys, user, chroot, force_command)
    subprocess.run([SSHD, "-t", "-f", str(config)], check=True, capture_output=True)
    log = workdir / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=out, stdout=out)
    try:
        _wait_for_banner(port, proc, log)
        yield SftpServer("openssh", "127.0.0.1", port, user, account_root, chroot is not None, keys)
    finally:
        proc.terminate()
        proc.wait(10)


def listen_sftp(
    loop: asyncio.AbstractEventLoop,
    port: int,
    keys: SshKeys,
    sftp_factory: Callable[[asyncssh.SSHServerChannel], asyncssh.SFTPServer],
) -> asyncssh.SSHAcceptor:
    """An asyncssh SFTP server on ``loop`` (running in another thread), key logins only."""

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            "127.0.0.1",
            port,
            server_host_keys=[str(keys.host_key)],
            authorized_client_keys=str(keys.authorized_keys),
            sftp_factory=sftp_factory,
            allow_scp=False,
        )

    return asyncio.run_coroutine_threadsafe(start(), loop).result(10)


def close_sftp(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, acceptor: asyncssh.SSHAcceptor
) -> None:
    """Stop :func:`listen_sftp`'s server, then its loop and the loop's thread."""

    async def stop() -> None:
        acceptor.close()
        await acceptor.wait_closed()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@contextmanager
def _asyncssh_server(account_root: Path, workdir: Path, _command: str) -> Iterator[SftpServer]:
    port = free_port()
    keys = make_keys(workdir, port)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def sftp_factory(chan: asyncssh.SSHServerChannel) -> asyncssh.SFTPServer:
        return asyncssh.SFTPServer(chan, chroot=str(account_root).encode())

    server = listen_sftp(loop, port, keys, sftp_factory)
    try:
        _wait_for_banner(port, None, None)
        yield SftpServer("asyncssh", "127.0.0.1", port, "insurer", account_root, True, keys)
    finally:
        close_sftp(loop, thread, server)


@contextmanager
def sftp_server(
    account_root: Path, workdir: Path, force_command: str = "internal-sftp"
) -> Iterator[SftpServer]:
    """An SFTP server whose user lands in ``account_root`` (chrooted where possible).

    ``force_command`` is sshd's ForceCommand (e.g. the production one); asyncssh ignores it.
    """
    wanted = os.environ.get("OLV_TEST_SFTP_SERVER", "")
    factory = _openssh if wanted != "asyncssh" and Path(SSHD).is_file() else _asyncssh_server
    with factory(account_root, workdir, force_command) as server:
        print(server.describe())
        yield server


@contextmanager
def intake_account_server(tmp: Path, account: str = "acme") -> Iterator[SftpServer]:
    """An SFTP server for one intake account (``intake/ACCOUNT`` with an inbox and an outbox)."""
    with intake_root(tmp) as base:
        root = base / "intake" / account
        for sub in ("inbox", "outbox"):
            (root / sub).mkdir(parents=True)
        with sftp_server(root, tmp / "ssh") as running:
            yield running
