"""Intake settings and the summary e-mail, sent through a real SMTP server on loopback."""

from __future__ import annotations

import smtplib

import pytest
from pydantic import ValidationError

from bob_loader.intake_settings import IntakeSettings
from bob_loader.mail import FileSummary, SmtpSender, sender_from_settings, summary_message
from tests.helpers.smtp_capture import smtp_server

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
