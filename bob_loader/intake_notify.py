"""Who hears about a processed file, and the sending of the summary e-mail.

The summary goes to the contacts of the file's NAICs (``olv bob contacts``), or to the account's
fallback addresses (``OLV_INTAKE_ACCOUNT_EMAILS``) when none of them has one. A relay outage is
logged and does not hold the file back: the report is in the outbox either way.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable, Sequence

from sqlalchemy import Engine, select

from bob_loader.intake_settings import IntakeSettings
from bob_loader.load import LoadOutcome
from bob_loader.mail import FileSummary, MailSender, sender_from_settings, summary_message

log = logging.getLogger("bob_loader.intake")

ContactLookup = Callable[[Sequence[str]], list[str]]


def db_contacts(engine: Engine) -> ContactLookup:
    """Contact addresses of NAICs from the loader's ``bob_contact`` table."""
    from bob_loader.models import InsurerContact

    def lookup(naics: Sequence[str]) -> list[str]:
        if not naics:
            return []
        with engine.connect() as conn:
            rows = conn.execute(
                select(InsurerContact.email)
                .where(InsurerContact.naic.in_(list(naics)))
                .order_by(InsurerContact.email)
                .distinct()
            )
            return [r[0] for r in rows]

    return lookup


def send_summary(
    sender: MailSender,
    summary: FileSummary,
    *,
    sender_address: str,
    contacts: ContactLookup,
    account_emails: dict[str, list[str]],
) -> None:
    """Send the summary to whoever should get it; log (never raise) when it cannot go out."""
    where = {"account": summary.account, "file": summary.file_name}
    recipients = contacts(summary.naics) or account_emails.get(summary.account, [])
    if not recipients:
        log.warning("no contact for the summary e-mail", extra={**where, "naics": summary.naics})
        return
    message = summary_message(summary, sender=sender_address, recipients=recipients)
    try:
        sender.send(message)
    except (smtplib.SMTPException, OSError) as exc:
        # The load is done and the report is in the outbox; a mail relay outage must not
        # hold the file back or stop the intake.
        log.error("summary e-mail not sent: %s", exc, extra=where)


def notify_web_upload(
    engine: Engine, settings: IntakeSettings, outcome: LoadOutcome, account: str
) -> None:
    """The summary an SFTP delivery gets, for a file uploaded on the portal (same recipients,
    same facts); nothing when e-mail is switched off (``OLV_SMTP_HOST`` unset)."""
    sender = sender_from_settings(settings)
    if sender is None:
        return
    summary = FileSummary(
        account=account,
        file_name=outcome.path.name,
        archived_as=outcome.path.name,
        status=outcome.status,
        naics=outcome.naics,
        records=outcome.records,
        errors=outcome.errors,
        warnings=outcome.warnings,
        reason=outcome.reason,
        report_name=outcome.report_path.name if outcome.report_path else None,
        web=True,
    )
    send_summary(
        sender,
        summary,
        sender_address=settings.smtp_from,
        contacts=db_contacts(engine),
        account_emails=settings.intake_account_emails,
    )
