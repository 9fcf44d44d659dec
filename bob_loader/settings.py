"""Settings of the book-of-business loader, read from ``OLV_BOB_*`` environment variables.

``OLV_BOB_MAX_ERROR_RATE`` (0.05)   share of records with errors above which a file is rejected
``OLV_BOB_PROFILE`` (minimal)       validation profile: ``minimal`` or ``full`` (SPEC §2)
``OLV_BOB_BATCH_SIZE`` (20000)      records written per bulk insert / COPY batch
``OLV_BOB_MAX_STORED_ISSUES`` (10000) error rows kept in the database per file; the error
                                    report file always lists every problem
``OLV_BOB_TEST_PAUSE_BEFORE_COMMIT`` (0) test hook only: seconds to sleep just before the swap
                                    commits, so crash tests can kill the loader inside the swap
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Profile = Literal["minimal", "full"]


class BobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_BOB_", extra="ignore")

    max_error_rate: float = Field(0.05, ge=0, le=1)
    profile: Profile = "minimal"
    batch_size: int = Field(20_000, ge=1)
    max_stored_issues: int = Field(10_000, ge=0)
    test_pause_before_commit: float = Field(0, ge=0)


def get_bob_settings() -> BobSettings:
    """Read afresh on each call: loads are rare, and tests change the environment between them."""
    return BobSettings()
