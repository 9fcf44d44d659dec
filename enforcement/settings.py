"""Settings of the enforcement intake, read from ``OLV_IIES_*`` environment variables.

``OLV_IIES_MAX_ROWS`` (250000)       transactions one file may carry (the API: 5,000 a call)
``OLV_IIES_MAX_LINE_BYTES`` (4096)   longest line accepted; a longer one rejects the file
``OLV_IIES_REMATCH_DAYS`` (45)       days an unmatched NBS is re-matched before U is final
``OLV_IIES_BATCH_SIZE`` (2000)       rows edited, matched and written per database round
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

API_MAX_ROWS = 5000  # SPEC §6: up to 5,000 rows a call


class IiesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_IIES_", extra="ignore")

    max_rows: int = Field(250_000, ge=1)
    max_line_bytes: int = Field(4096, ge=256)
    rematch_days: int = Field(45, ge=0)
    batch_size: int = Field(2000, ge=1, le=10_000)


def get_iies_settings() -> IiesSettings:
    """Read afresh on each call: loads are rare, and tests change the environment between them."""
    return IiesSettings()
