"""Settings of the portal's pages, read from ``OLV_PORTAL_*`` environment variables.

``OLV_PORTAL_UPLOAD_DIR`` (olv-uploads)   where book-of-business files uploaded on the web are
                                          kept (one folder per upload, with its error report)
``OLV_PORTAL_MAX_UPLOAD_MB`` (400)        largest BoB upload (a million records is ~302 MB)
``OLV_PORTAL_BATCH_MAX_ROWS`` (10000)     largest CSV on the batch page
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class WebSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_PORTAL_", extra="ignore")

    upload_dir: Path = Path("olv-uploads")
    max_upload_mb: int = Field(400, ge=1)
    batch_max_rows: int = Field(10_000, ge=1, le=1_000_000)


def get_web_settings() -> WebSettings:
    return WebSettings()
