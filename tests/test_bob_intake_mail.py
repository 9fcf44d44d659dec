"""Intake settings and the summary e-mail, sent through a real SMTP server on loopback."""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from bob_loader import intake_watch
from bob_loader.intake_settings import IntakeSettings
from bob_loader.mail import (
    FileSummary,
    SmtpDeadlineExceeded,
    SmtpSender,
    sender_from_settings,
    summary_message,
)
from bob_loader.models import BobCurrent
from olv import db
from olv.logging import JsonFormatter
from tests.helpers.bob_intake_data import vin
from tests.helpers.smtp_capture import smtp_server
from tests.helpers.smtp_capture import timed_send as send_within
from tests.test_bob_intake_robust import drop_bob, make_inbox, real_intake, visible

SUMMARY = FileSummary(
    account="acme",
    file_name="Acme 20250101.txt",
    archived_as="20250102T030405Z_Acme 20250101.txt",
    status="rejected",
    naics=["12345", "67890"],
    records=0,
    errors=812,
    warnings=3,
    reason="error rate 8.12 % (812 of 10000 records) is above the limit of 5.00 %",
    report_name="20250102T030405Z_Acme 20250101.txt.errors.txt",
)


def test_defaults_keep_mail_off_and_pickup_within_the_spec_window() -> None:
    settings = IntakeSettings()
    assert settings.smtp_host is None and sender_from_settings(settings) is None
    assert settings.smtp_tls == "starttls" and settings.smtp_effective_port == 587
    assert settings.intake_poll_seconds + settings.intake_stable_seconds < 30


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLV_SMTP_HOST", "relay.state.example")
    monkeypatch.setenv("OLV_SMTP_TLS", "ssl")
    monkeypatch.setenv("OLV_SMTP_USER", "olv")
    monkeypatch.setenv("OLV_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("OLV_INTAKE_ACCOUNT_NAICS", "acme=12345 67890; beta=11111")
    monkeypatch.setenv("OLV_INTAKE_ACCOUNT_EMAILS", "acme=a@acme.example,b@acme.example")

    settings = IntakeSettings()

    assert settings.intake_account_naics == {"acme": ["12345", "67890"], "beta": ["11111"]}
    assert settings.intake_account_emails == {"acme": ["a@acme.example", "b@acme.example"]}
    assert sender_from_settings(settings) == SmtpSender(
        "relay.state.example", 465, "ssl", "olv", "s3cret", 30.0
    )
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OLV_INTAKE_ACCOUNT_NAICS", "acme=1234"),
        ("OLV_INTAKE_ACCOUNT_NAICS", "12345"),
        ("OLV_SMTP_TLS", "maybe"),
        ("OLV_INTAKE_POLL_SECONDS", "60"),
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        IntakeSettings()


def test_a_login_over_clear_text_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLV_SMTP_HOST", "relay.state.example")
    monkeypatch.setenv("OLV_SMTP_TLS", "none")
    monkeypatch.setenv("OLV_SMTP_USER", "olv")
    with pytest.raises(ValidationError, match="needs OLV_SMTP_TLS"):
        IntakeSettings()


def test_the_summary_holds_file_level_facts_only() -> None:
    message = summary_message(SUMMARY, sender="olv@state.example", recipients=["x@acme.example"])
    body = message.get_content()
    assert message["Subject"] == "OLV book of business: Acme 20250101.txt: rejected (acme)"
    for fact in ("12345, 67890", "Errors:    812", "Warnings:  3", "error rate 8.12 %"):
        assert fact in body
    assert "outbox/20250102T030405Z_Acme 20250101.txt.errors.txt" in body
    assert "archive/20250102T030405Z_Acme 20250101.txt" in body


def test_smtp_sender_delivers_through_a_real_server() -> None:
    with smtp_server() as smtp:
        sender = SmtpSender(smtp.host, smtp.port, tls="none", timeout=10)
        sender.send(summary_message(SUMMARY, sender="olv@state.example", recipients=["x@a.ex"]))
        [received] = smtp.wait_for(1)
    assert received.mail_from == "olv@state.example"
    assert received.rcpt_tos == ["x@a.ex"]
    assert "rejected, nothing loaded" in received.message.get_content()


def test_starttls_mode_never_falls_back_to_clear_text() -> None:
    with smtp_server() as smtp:  # offers no STARTTLS
        sender = SmtpSender(smtp.host, smtp.port, tls="starttls", timeout=10)
        message = summary_message(SUMMARY, sender="olv@state.example", recipients=["x@a.ex"])
        with pytest.raises(smtplib.SMTPNotSupportedError):
            sender.send(message)
        assert smtp.received == []


# --- a relay that answers, but too slowly -------------------------------------------------------

# What the relay says at each step: greeting, EHLO, MAIL, RCPT, DATA, end of message, QUIT.
REPLIES = [b"220 relay\r\n", b"250 relay\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"]
REPLIES += [b"250 queued\r\n", b"221 bye\r\n"]


@dataclass
class TricklingRelay:
    host: str
    port: int
    connections: int = 0


@contextmanager
def trickling_relay(answered: int, gap: float = 0.2) -> Iterator[TricklingRelay]:
    """A raw-socket relay: its first ``answered`` replies come at once, the next one a byte
    every ``gap`` seconds and never ends. Each byte arrives well within smtplib's per-read
    timeout, so only a deadline for the whole send stops the client."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    relay = TricklingRelay("127.0.0.1", listener.getsockname()[1])
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn, conn.makefile("rb") as lines:
            for step, reply in enumerate(REPLIES):
                if step == answered:
                    for byte in reply[:3] + b"x" * 10_000:
                        if stop.wait(gap):
                            return
                        conn.sendall(bytes([byte]))
                    return
                conn.sendall(reply)
                if step == 4:  # DATA: the message runs up to a lone dot
                    while lines.readline() not in (b".\r\n", b""):
                        pass
                elif not lines.readline():
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            relay.connections += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield relay
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()


def timed_send(sender: SmtpSender) -> tuple[float, BaseException | None]:
    return send_within(
        sender, summary_message(SUMMARY, sender="olv@state.example", recipients=["x@a.ex"])
    )


@pytest.mark.parametrize("answered", [0, 1, 5], ids=["greeting", "ehlo", "end-of-message"])
def test_a_trickling_relay_fails_the_send_at_the_timeout(answered: int) -> None:
    with trickling_relay(answered) as relay:
        took, error = timed_send(SmtpSender(relay.host, relay.port, tls="none", timeout=1))
    assert isinstance(error, SmtpDeadlineExceeded)
    assert isinstance(error, smtplib.SMTPException)  # the intake logs it as a relay failure
    assert took < 2.5
    assert str(error) == f"relay 127.0.0.1:{relay.port} did not complete the send within 1 s"


def test_a_trickling_tls_handshake_fails_the_send_at_the_timeout() -> None:
    # The greeting's bytes stand in for a TLS server hello that never ends; at 0.3 s a byte,
    # its 5-byte record header is not complete (and found invalid) before the 1 s deadline.
    with trickling_relay(0, gap=0.3) as relay:
        took, error = timed_send(SmtpSender(relay.host, relay.port, tls="ssl", timeout=1))
    assert isinstance(error, SmtpDeadlineExceeded) and took < 2.5


def test_a_slow_goodbye_after_the_relay_took_the_message_is_not_a_failure() -> None:
    with trickling_relay(6) as relay:
        took, error = timed_send(SmtpSender(relay.host, relay.port, tls="none", timeout=1))
    assert error is None and took < 2.5


def test_the_intake_goes_on_past_a_trickling_relay_and_does_not_resend(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "intake"
    drop_bob(make_inbox(base, "acme"), "Acme.txt", "12345")
    drop_bob(make_inbox(base, "beta"), "Beta.txt", "22222", first=50)
    with trickling_relay(0) as relay:
        sender = SmtpSender(relay.host, relay.port, tls="none", timeout=1)
        watcher = real_intake(base, db_url, sender=sender)
        runner = threading.Thread(
            target=intake_watch.watch,
            args=(watcher,),
            kwargs={"poll_seconds": 0.1, "stop": threading.Event(), "once": True},
            daemon=True,
        )
        started = time.monotonic()
        try:
            with caplog.at_level(logging.INFO):
                runner.start()
                runner.join(15)
                took = time.monotonic() - started
                assert not runner.is_alive(), "the intake is stuck on the relay"
                assert watcher.run_round() == 0  # the e-mails are not tried again
        finally:
            watcher.engine.dispose()
        connections = relay.connections

    assert took < 8  # two e-mails of at most 1 s each, plus two small loads
    assert connections == 2
    for account in ("acme", "beta"):
        assert len(visible(base / account / "archive")) == 1
        assert len(visible(base / account / "outbox")) == 0  # accepted, no errors to report
    engine = db.make_engine(db_url)
    with engine.connect() as conn:
        assert {r.naic for r in conn.execute(select(BobCurrent))} == {"12345", "22222"}
    engine.dispose()
    failures = [r for r in caplog.records if r.getMessage().startswith("summary e-mail not sent")]
    assert len(failures) == 2
    assert all("within 1 s" in r.getMessage() for r in failures)
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert vin(0) not in logged and vin(50) not in logged and "TESTPERSON" not in logged
