"""Settings of the state portal, read from ``OLV_PORTAL_*`` environment variables.

The database, time zone and the answerable window (``OLV_DATABASE_URL``, ``OLV_TIMEZONE``,
``OLV_VERIFY_PAST_DAYS``) come from :class:`olv.config.Settings`, shared with the other parts.

``OLV_PORTAL_BUDGET_SECONDS`` (5.0)      one budget per query, from receipt to answer
``OLV_PORTAL_INSURER_CONCURRENCY`` (8)   calls in flight per insurer (connections per insurer)
``OLV_PORTAL_BATCH_CONCURRENCY`` (200)   batch items worked on at once
``OLV_PORTAL_TOKEN_RATE_PER_MINUTE`` (6000) requests a minute per API token, and per account
                                         signed in on the pages (429 above)
``OLV_PORTAL_TOKEN_DAYS`` (90)           default lifetime of a new API token
``OLV_PORTAL_BOB_DEADLINE_DAY`` (7)      day of the month by which each NAIC's BoB must arrive
``OLV_PORTAL_QUERY_LOG_DAYS`` (400)      query and security log retention (at least a year)
``OLV_PORTAL_WORKERS`` (1)              processes of ``olv portal serve`` (caches and rate limits
                                         are kept per process)
``OLV_PORTAL_STATE`` (XX)                the state's two-letter code, sent as ``PolicyState``
                                         when the plate's state is not known
``OLV_PORTAL_REQUESTOR`` (OLV state portal) organization name sent as the requestor
``OLV_PORTAL_UPLOAD_DIR`` (olv-uploads)   where book-of-business files uploaded on the web are
                                         kept (one folder per upload, with its error report)
``OLV_PORTAL_MAX_UPLOAD_MB`` (400)        largest BoB upload (a million records is ~302 MB)
``OLV_PORTAL_BATCH_MAX_ROWS`` (10000)     largest CSV on the batch page

One object, read once when the app is built (``create_app``) and kept as
``app.state.portal_settings``: every page and route reads that one.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_PORTAL_", extra="ignore")

    budget_seconds: float = Field(5.0, gt=0.5, le=60)
    insurer_concurrency: int = Field(8, ge=1, le=1000)
    batch_concurrency: int = Field(200, ge=1, le=5000)
    token_rate_per_minute: int = Field(6000, ge=1)
    token_days: int = Field(90, ge=1, le=3650)
    bob_deadline_day: int = Field(7, ge=1, le=28)
    query_log_days: int = Field(400, ge=366)
    workers: int = Field(1, ge=1, le=64)
    state: str = Field("XX", pattern=r"^[A-Z]{2}$")
    requestor: str = Field("OLV state portal", min_length=1, max_length=80)
    upload_dir: Path = Path("olv-uploads")
    max_upload_mb: int = Field(400, ge=1)
    batch_max_rows: int = Field(10_000, ge=1, le=1_000_000)


def get_portal_settings() -> PortalSettings:
    """Read afresh on each call (entry points call it once; tests change the environment)."""
    return PortalSettings()
