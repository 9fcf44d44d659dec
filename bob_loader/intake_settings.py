"""Settings of the SFTP intake and its e-mail notices (environment, prefix ``OLV_``).

========================== ============ =====================================================
variable                   default      meaning
========================== ============ =====================================================
OLV_SMTP_HOST              (unset)      SMTP relay; unset means no e-mail is sent
OLV_SMTP_PORT              by TLS mode  25 (``none``), 587 (``starttls``), 465 (``ssl``)
OLV_SMTP_TLS               starttls     ``none`` | ``starttls`` | ``ssl``
OLV_SMTP_USER              (unset)      login name; a login needs TLS (``starttls``/``ssl``)
OLV_SMTP_PASSWORD          (unset)      login password
OLV_SMTP_FROM              olv-intake@localhost   sender address of the summaries
OLV_SMTP_TIMEOUT_SECONDS   30           the whole send, name lookup to goodbye
OLV_INTAKE_POLL_SECONDS    5            how often the watcher looks at the inboxes
OLV_INTAKE_STABLE_SECONDS  5            size and mtime unchanged this long = upload complete
OLV_INTAKE_PARTIAL_SECONDS 20           the same for a BoB upload that ends mid-record
OLV_INTAKE_ACCOUNT_NAICS   (unset)      optional bindings ``acme=12345 67890;beta=11111``
OLV_INTAKE_ACCOUNT_EMAILS  (unset)      per-account fallback recipients ``acme=ops@acme.example``
========================== ============ =====================================================

Mapping values are ``account=items`` pairs separated by ``;``; items are separated by spaces or
commas. The summary of a file goes to the contacts of its NAICs; an account's fallback addresses
are used when none of the file's NAICs has a contact (a file rejected before any NAIC was read).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from olv import normalize

# How long a BoB upload that ends mid-record must stay unchanged (OLV_INTAKE_PARTIAL_SECONDS):
# with the 5-s poll, such a file is still picked up within SPEC's 30 s of its last write.
DEFAULT_PARTIAL_SECONDS = 20.0

TlsMode = Literal["none", "starttls", "ssl"]
DEFAULT_PORTS: dict[str, int] = {"none": 25, "starttls": 587, "ssl": 465}

_ITEM_SEP = re.compile(r"[\s,]+")


def parse_mapping(value: object) -> object:
    """``"acme=1 2;beta=3"`` → ``{"acme": ["1", "2"], "beta": ["3"]}`` (other types unchanged)."""
    if not isinstance(value, str):
        return value
    result: dict[str, list[str]] = {}
    for pair in value.split(";"):
        if not pair.strip():
            continue
        account, sep, items = pair.partition("=")
        if not sep or not account.strip():
            raise ValueError(f"expected account=items, got {pair.strip()!r}")
        result[account.strip()] = [i for i in _ITEM_SEP.split(items.strip()) if i]
    return result


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_", extra="ignore")

    smtp_host: str | None = None
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_tls: TlsMode = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "olv-intake@localhost"
    smtp_timeout_seconds: float = Field(30.0, gt=0)

    intake_poll_seconds: float = Field(5.0, gt=0, le=25)  # ≤ 25 s keeps pickup within 30 s
    intake_stable_seconds: float = Field(5.0, ge=0, le=20)
    # A stalled upload's half would load as the NAIC's whole master: wait longer for the rest
    # (it ends mid-record), yet not for ever, so a file that really ends so is still loaded and
    # reported. The default keeps every pickup within SPEC's 30 s; slow links may want more.
    intake_partial_seconds: float = Field(DEFAULT_PARTIAL_SECONDS, ge=0)
    intake_account_naics: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    intake_account_emails: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)

    @field_validator("intake_account_naics", "intake_account_emails", mode="before")
    @classmethod
    def _mapping(cls, value: object) -> object:
        return parse_mapping(value)

    @field_validator("intake_account_naics")
    @classmethod
    def _naics_are_digits(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for account, naics in value.items():
            bad = [n for n in naics if not normalize.is_naic(n)]
            if bad:
                raise ValueError(f"account {account}: NAICs are 5 digits, got {bad}")
        return value

    @field_validator("smtp_host")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _no_clear_text_login(self) -> IntakeSettings:
        # Refuse rather than silently send the relay password unencrypted.
        if self.smtp_user and self.smtp_tls == "none":
            raise ValueError("OLV_SMTP_USER needs OLV_SMTP_TLS=starttls or ssl")
        return self

    @property
    def smtp_effective_port(self) -> int:
        return self.smtp_port or DEFAULT_PORTS[self.smtp_tls]
