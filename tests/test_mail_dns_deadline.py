"""The relay's name lookup counts against ``OLV_SMTP_TIMEOUT_SECONDS`` like the rest of the send.

A resolver that hangs cannot be made real on loopback, so ``socket.getaddrinfo`` is replaced by
one that blocks for any lookup that may ask DNS (numeric lookups still go to the real one). The
relays that do answer are real aiosmtpd servers on 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bob_loader import mail
from bob_loader.mail import FileSummary, SmtpDeadlineExceeded, SmtpSender, summary_message
from tests.helpers.smtp_capture import smtp_server
from tests.helpers.smtp_capture import timed_send as send_within

SUMMARY = FileSummary(
    account="acme",
    file_name="Acme 20250101.txt",
    archived_as="20250102T030405Z_Acme 20250101.txt",
    status="accepted",
    naics=["12345"],
    records=10,
    errors=0,
    warnings=0,
    reason=None,
    report_name=None,
)
DEADLINE = 1.0
SLACK = 2.0  # a loaded machine may be late to wake the sender; a hung lookup is far later


class HungResolver:
    """Stands in for a system resolver that never answers. Lookups that must not touch DNS
    (``AI_NUMERICHOST``) are answered by the real ``getaddrinfo``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.asked: list[str] = []
        self._real = socket.getaddrinfo
        self._monkeypatch = monkeypatch

    def install(self) -> None:
        """From here on (to the test's end) the sender's lookups go through this resolver.
        After the loopback server has started: its own start-up check looks its address up."""
        self._monkeypatch.setattr(mail.socket, "getaddrinfo", self)

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        flags = kwargs.get("flags", args[3] if len(args) > 3 else 0)
        if flags & socket.AI_NUMERICHOST:
            return self._real(host, port, *args, **kwargs)
        self.asked.append(str(host))
        # Released when the test ends, so that the abandoned lookup thread ends too.
        self.release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


@pytest.fixture
def hung_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HungResolver]:
    resolver = HungResolver(monkeypatch)
    try:
        yield resolver
    finally:
        resolver.release.set()


def timed_send(sender: SmtpSender, limit: float) -> tuple[float, BaseException | None]:
    """A send stuck in the lookup fails the test instead of hanging it (the stuck thread ends
    once the fake resolver is released)."""
    message = summary_message(SUMMARY, sender="olv@state.example", recipients=["x@a.ex"])
    return send_within(sender, message, limit)


def test_a_hung_name_lookup_fails_the_send_at_the_deadline(hung_resolver: HungResolver) -> None:
    hung_resolver.install()
    sender = SmtpSender("relay.olv.invalid", 25, tls="none", timeout=DEADLINE)
    took, error = timed_send(sender, DEADLINE + SLACK)
    assert hung_resolver.asked == ["relay.olv.invalid"]
    # The same failure as a relay that does not connect or answer in time.
    assert isinstance(error, SmtpDeadlineExceeded), repr(error)
    assert str(error) == "relay relay.olv.invalid:25 did not complete the send within 1 s"
    assert DEADLINE - 0.05 <= took < DEADLINE + SLACK


def test_an_ip_literal_relay_is_not_looked_up(hung_resolver: HungResolver) -> None:
    with smtp_server() as smtp:
        hung_resolver.install()
        sender = SmtpSender(smtp.host, smtp.port, tls="none", timeout=DEADLINE)
        took, error = timed_send(sender, DEADLINE + SLACK)
        [received] = smtp.wait_for(1)
    assert error is None, repr(error)
    assert hung_resolver.asked == []
    assert received.rcpt_tos == ["x@a.ex"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_send_through_a_real_server_still_works(host: str) -> None:
    with smtp_server() as smtp:
        sender = SmtpSender(host, smtp.port, tls="none", timeout=10)
        took, error = timed_send(sender, 10 + SLACK)
        [received] = smtp.wait_for(1)
    assert error is None, repr(error)
    assert received.mail_from == "olv@state.example"
    assert "accepted and loaded" in received.message.get_content()
