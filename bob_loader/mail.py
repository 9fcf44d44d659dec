"""E-mail summaries of intake results, behind a one-method sender interface.

:class:`SmtpSender` talks to a relay with :mod:`smtplib`; :class:`MemorySender` keeps messages
in a list (tests, dry runs). The summary carries file-level facts only — file name, status,
counts, NAICs, the loader's reason — never a record's content: insured names, addresses and
VINs stay in the error report the insurer collects from its ``outbox/``.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

from bob_loader.intake_claims import printable
from bob_loader.intake_settings import IntakeSettings, TlsMode

__all__ = [
    "FileSummary",
    "MailSender",
    "MemorySender",
    "SmtpSender",
    "sender_from_settings",
    "summary_message",
]


class MailSender(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` to its ``To`` recipients or raise."""


@dataclass(frozen=True, slots=True)
class SmtpSender:
    host: str
    port: int
    tls: TlsMode = "starttls"
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0

    def send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if self.tls == "ssl":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.tls == "starttls":
                client.starttls(context=context)
            if self.user:
                client.login(self.user, self.password or "")
            client.send_message(message)


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
