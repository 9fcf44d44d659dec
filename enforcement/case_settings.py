"""Day counts of the case engine, read from ``OLV_IIES_*`` environment variables.

Defaults are the IIES guide's where it gives one, else SPEC §6's:

``OLV_IIES_GRACE_DAYS`` (10)            after a cancellation's effective date, before the first
                                         inquiry letter
``OLV_IIES_LETTER_DAYS`` (30)           from any letter to its suspension
``OLV_IIES_MVF_ANSWER_DAYS`` (14)       for the insurer to answer a mandatory verification (MVF)
``OLV_IIES_PENALTY_MAX_LAPSE_DAYS`` (90) longest lapse a civil penalty may settle
``OLV_IIES_PENALTY_WINDOW_MONTHS`` (36) a civil penalty is allowed once in this many months
``OLV_IIES_BOB_MONITORING`` (false)     book-of-business state: the run also opens cases for
                                         registrations missing from the monthly books
``OLV_IIES_BOB_MISSING_LOADS`` (2)      consecutive monthly BoB loads without the VIN that open
                                         a case (book-of-business states)
``OLV_IIES_STATUS_RATE_PER_MINUTE`` (20) look-ups on the public status page per client address
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_IIES_", extra="ignore")

    grace_days: int = Field(10, ge=0, le=365)
    letter_days: int = Field(30, ge=1, le=365)
    mvf_answer_days: int = Field(14, ge=1, le=365)
    penalty_max_lapse_days: int = Field(90, ge=0, le=3650)
    penalty_window_months: int = Field(36, ge=0, le=240)
    bob_monitoring: bool = False
    bob_missing_loads: int = Field(2, ge=1, le=24)
    status_rate_per_minute: int = Field(20, ge=1, le=10_000)


def get_case_settings() -> CaseSettings:
    """Read afresh on each call (entry points call it once; tests change the environment)."""
    return CaseSettings()
