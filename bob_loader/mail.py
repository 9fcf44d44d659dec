"""E-mail summaries of intake results, behind a one-method sender interface.

:class:`SmtpSender` talks to a relay with :mod:`smtplib`; :class:`MemorySender` keeps messages
in a list (tests, dry runs). The summary carries file-level facts only — file name, status,
counts, NAICs, the loader's reason — never a record's content: insured names, addresses and
VINs stay in the error report the insurer collects from its ``outbox/``.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from bob_loader.intake_claims import printable
from bob_loader.intake_settings import IntakeSettings, TlsMode

__all__ = [
    "FileSummary",
    "MailSender",
    "MemorySender",
    "SmtpDeadlineExceeded",
    "SmtpSender",
    "sender_from_settings",
    "summary_message",
]


# What socket.getaddrinfo yields: family, type, proto, canonname, sockaddr.
_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


class MailSender(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` to its ``To`` recipients or raise."""


class SmtpDeadlineExceeded(smtplib.SMTPException):
    """The relay did not finish the whole exchange within the configured timeout."""


class _Watchdog:
    """One deadline for a whole SMTP exchange.

    smtplib's timeout bounds each socket read, so a relay that answers one byte at a time holds
    the caller for as long as it likes. When the deadline passes, the watchdog shuts the
    connection down: the blocked read or write returns at once and the send fails.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        # Duplicates of the connected sockets: a shutdown through one acts on the connection
        # itself, so it still reaches the socket after STARTTLS has wrapped (and detached) it.
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def overdue(self) -> bool:
        """The deadline has passed: the watchdog fired, or a read's own timeout (which, set to
        the whole deadline, cannot end before it) beat the watchdog's thread to it."""
        return self.expired or time.monotonic() >= self._ends - 0.01

    def remaining(self) -> float:
        left = self._ends - time.monotonic()
        if left <= 0:
            raise TimeoutError("SMTP deadline passed")
        return left

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                raise TimeoutError("SMTP deadline passed")
            self._watched.append(sock.dup())

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


class _DeadlineSMTP(smtplib.SMTP):
    """An SMTP client whose connection (TCP and implicit TLS) runs under a :class:`_Watchdog`."""

    def __init__(
        self, watchdog: _Watchdog, timeout: float, implicit_tls: ssl.SSLContext | None
    ) -> None:
        self._watchdog = watchdog
        self._implicit_tls = implicit_tls
        super().__init__(timeout=timeout)  # no host: the connect comes later, under the deadline

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = self._connect(host, port, timeout)
        if self._implicit_tls is None:
            return sock
        try:
            return self._implicit_tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise

    def _connect(self, host: str, port: int, timeout: float) -> socket.socket:
        # socket.create_connection gives every address the full timeout; here all of them
        # share what is left of the one deadline. A connecting socket cannot be shut down
        # from another thread, hence the connect timeout rather than the watchdog.
        last: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _, address in self._resolve(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(min(timeout, self._watchdog.remaining()))
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(address)
                sock.settimeout(timeout)
                self._watchdog.watch(sock)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
                if self._watchdog.expired:
                    break
        raise last

    def _resolve(self, host: str, port: int) -> list[_AddrInfo]:
        """``getaddrinfo`` within what is left of the deadline.

        The system resolver takes as long as its own configuration says (several servers,
        retries, a stalled NSS module) and cannot be interrupted, so the lookup runs in a
        daemon thread that is abandoned, not joined, when the deadline passes: the send fails
        as a connect timeout does. The abandoned thread ends whenever the resolver gives up.
        """
        try:  # an address needs no resolver, and no thread
            numeric = socket.getaddrinfo(
                host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            pass  # a name: asked of the resolver below
        else:
            return list(numeric)
        done = threading.Event()
        found: list[_AddrInfo] = []
        failed: list[Exception] = []

        def lookup() -> None:
            try:
                found.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
            except Exception as exc:  # raised in the sender's thread, as it was raised here
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=lookup, name="smtp-getaddrinfo", daemon=True).start()
        # remaining() raises TimeoutError once the deadline has passed, so a wait that wakes a
        # little early only waits again; the caller then finds the send overdue.
        while not done.wait(self._watchdog.remaining()):
            pass
        if failed:
            raise failed[0]
        return found


@dataclass(frozen=True, slots=True)
class SmtpSender:
    host: str
    port: int
    tls: TlsMode = "starttls"
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0  # for the whole send: lookup, connect, TLS, login and the message

    def send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        watchdog = _Watchdog(self.timeout)
        client = _DeadlineSMTP(watchdog, self.timeout, context if self.tls == "ssl" else None)
        try:
            client.connect(self.host, self.port)
            if self.tls == "starttls":
                client.starttls(context=context)
            if self.user:
                client.login(self.user, self.password or "")
            client.send_message(message)
            if watchdog.expired:
                # smtplib takes a reply cut short by the shutdown for a whole one: the relay's
                # "250" may be the first bytes of a line it never finished.
                raise TimeoutError("SMTP deadline passed")
        except (smtplib.SMTPException, OSError) as exc:
            if watchdog.overdue():
                # The relay's name and the timeout only: the message may name recipients.
                raise SmtpDeadlineExceeded(
                    f"relay {self.host}:{self.port} did not complete the send within "
                    f"{self.timeout:g} s"
                ) from exc
            raise
        else:
            # The relay has accepted the message: a slow or failed goodbye changes nothing.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()
        finally:
            watchdog.stop()
            client.close()


@dataclass(slots=True)
class MemorySender:
    messages: list[EmailMessage] = field(default_factory=list)

    def send(self, message: EmailMessage) -> None:
        self.messages.append(message)


def sender_from_settings(settings: IntakeSettings) -> SmtpSender | None:
    """The configured relay, or None when ``OLV_SMTP_HOST`` is unset (e-mail switched off)."""
    if settings.smtp_host is None:
        return None
    return SmtpSender(
        host=settings.smtp_host,
        port=settings.smtp_effective_port,
        tls=settings.smtp_tls,
        user=settings.smtp_user,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.smtp_timeout_seconds,
    )


@dataclass(frozen=True, slots=True)
class FileSummary:
    """What the insurer is told about one delivered file."""

    account: str
    file_name: str
    archived_as: str
    status: str
    naics: Sequence[str]
    records: int
    errors: int
    warnings: int
    reason: str | None
    report_name: str | None  # name of the error report in the account's outbox/
    web: bool = False  # uploaded on the portal: no archive/ or outbox/; the report is on its page


_STATUS_TEXT = {
    "accepted": "accepted and loaded",
    "rejected": "rejected, nothing loaded",
    "duplicate": "already loaded earlier (same content), not loaded again",
    "failed": "not processed: an internal error stopped it (see Reason)",
}


def summary_message(
    summary: FileSummary, *, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain="olv.invalid")
    # Names come from the insurer's upload and the intake directory: made printable here too,
    # since a line break in a header value would make the message impossible to build.
    account, file_name = printable(summary.account), printable(summary.file_name)
    message["Subject"] = f"OLV book of business: {file_name}: {summary.status} ({account})"
    lines = [
        f"Account:   {account}",
        f"File:      {file_name}",
        f"Status:    {_STATUS_TEXT.get(summary.status, summary.status)}",
        f"NAIC(s):   {', '.join(summary.naics) or '-'}",
        f"Records:   {summary.records}",
        f"Errors:    {summary.errors}",
        f"Warnings:  {summary.warnings}",
    ]
    if summary.reason:
        lines.append(f"Reason:    {printable(summary.reason)}")
    if summary.web:
        lines.append("Received:  by upload on the state portal")
        if summary.report_name:
            lines.append("Report:    on the portal's Book of business page (one line per error)")
    else:
        lines.append(f"Archived:  archive/{printable(summary.archived_as)}")
        if summary.report_name:
            lines.append(f"Report:    outbox/{printable(summary.report_name)} (one line per error)")
    lines += ["", "This message was sent by the state's OLV intake; replies are not read."]
    message.set_content("\n".join(lines) + "\n")
    return message
