"""Settings of the state portal, read from ``OLV_PORTAL_*`` environment variables.

The database, time zone and the answerable window (``OLV_DATABASE_URL``, ``OLV_TIMEZONE``,
``OLV_VERIFY_PAST_DAYS``) come from :class:`olv.config.Settings`, shared with the other parts.

``OLV_PORTAL_BUDGET_SECONDS`` (5.0)      one budget per query, from receipt to answer
``OLV_PORTAL_INSURER_CONCURRENCY`` (8)   calls in flight per insurer (connections per insurer)
``OLV_PORTAL_REALTIME_SLOTS`` (2)        of those, kept for real-time queries: batches share the
                                         rest (fewer than OLV_PORTAL_INSURER_CONCURRENCY)
``OLV_PORTAL_BATCH_CONCURRENCY`` (200)   batch items worked on at once
``OLV_PORTAL_TOKEN_RATE_PER_MINUTE`` (6000) requests a minute per API token, and per account
                                         signed in on the pages (429 above); each item of a
                                         batch counts as one
``OLV_PORTAL_TOKEN_DAYS`` (90)           default lifetime of a new API token
``OLV_PORTAL_BOB_DEADLINE_DAY`` (10)     day of the month by which each NAIC's BoB must arrive
``OLV_PORTAL_QUERY_LOG_DAYS`` (400)      query and security log retention (at least a year)
``OLV_PORTAL_WORKERS`` (1)              processes of ``olv portal serve`` (rate limits, sign-in
                                         throttles and revocations are shared through the database)
``OLV_PORTAL_COMPLIANCE_CONCURRENCY`` (2) compliance reports worked on at once (503 beyond)
``OLV_PORTAL_COMPLIANCE_SECONDS`` (10)   longest the database may count one compliance report
``OLV_PORTAL_HEADER_TIMEOUT_SECONDS`` (10) a request's head must arrive within this (else dropped)
``OLV_PORTAL_BODY_IDLE_SECONDS`` (30)    a request body may stall this long at most (else dropped)
``OLV_PORTAL_MAX_CONNECTIONS`` (2048)    open connections per worker; past it requests get 503
``OLV_PORTAL_STATE`` (XX)                the state's two-letter code, sent as ``PolicyState``
                                         when the plate's state is not known
``OLV_PORTAL_REQUESTOR`` (OLV state portal) organization name sent as the requestor
``OLV_PORTAL_MAINTENANCE_WINDOWS`` (none) insurers' planned maintenance (:mod:`portal.maintenance`):
                                         unavailability inside a window is not counted
``OLV_PORTAL_SECRET_KEY`` (none)         at least 32 characters: encrypts TOTP secrets at rest and
                                         keys the hash of unknown sign-in names
``OLV_PORTAL_SECRET_KEY_FILE`` (olv-portal-secret.key) a file whose first line is that key
                                         (made on first start when neither is set)
``OLV_PORTAL_UPLOAD_DIR`` (olv-uploads)   where book-of-business files uploaded on the web are
                                         kept (one folder per upload, with its error report)
``OLV_PORTAL_MAX_UPLOAD_MB`` (400)        largest BoB upload (a million records is ~302 MB)
``OLV_PORTAL_BATCH_MAX_ROWS`` (10000)     largest CSV on the batch page

One object, read once when the app is built (``create_app``) and kept as
``app.state.portal_settings``: every page and route reads that one.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from portal.maintenance import Window, parse_windows

# An idle kept-alive connection is closed after this (the insurer client keeps its own under
# it); connections waiting to be accepted queue up to the backlog.
KEEP_ALIVE_SECONDS = 5
LISTEN_BACKLOG = 2048


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_PORTAL_", extra="ignore")

    budget_seconds: float = Field(5.0, gt=0.5, le=60)
    insurer_concurrency: int = Field(8, ge=1, le=1000)
    realtime_slots: int = Field(2, ge=0, le=999)
    batch_concurrency: int = Field(200, ge=1, le=5000)
    token_rate_per_minute: int = Field(6000, ge=1)
    failed_lookups_per_minute: int = Field(600, ge=1)
    token_days: int = Field(90, ge=1, le=3650)
    bob_deadline_day: int = Field(10, ge=1, le=28)  # Idaho: "by the 10th of the month"
    query_log_days: int = Field(400, ge=366)
    workers: int = Field(1, ge=1, le=64)
    header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    body_idle_seconds: float = Field(30.0, gt=0, le=600)
    max_connections: int = Field(2048, ge=16, le=1_000_000)
    compliance_concurrency: int = Field(2, ge=1, le=64)
    compliance_seconds: float = Field(10.0, gt=0, le=300)
    state: str = Field("XX", pattern=r"^[A-Z]{2}$")
    requestor: str = Field("OLV state portal", min_length=1, max_length=80)
    secret_key: SecretStr | None = None  # see portal.secret_key
    secret_key_file: Path | None = None
    maintenance_windows: str = ""
    upload_dir: Path = Path("olv-uploads")
    max_upload_mb: int = Field(400, ge=1)
    batch_max_rows: int = Field(10_000, ge=1, le=1_000_000)

    @field_validator("maintenance_windows")
    @classmethod
    def _windows(cls, value: str) -> str:
        parse_windows(value)  # refused at start, naming the bad entry
        return value

    @cached_property
    def maintenance(self) -> tuple[Window, ...]:
        return parse_windows(self.maintenance_windows)

    @model_validator(mode="after")
    def _batches_keep_a_slot(self) -> PortalSettings:
        if self.realtime_slots >= self.insurer_concurrency:
            raise ValueError(
                "OLV_PORTAL_REALTIME_SLOTS must be less than OLV_PORTAL_INSURER_CONCURRENCY "
                "(batches need at least one slot)"
            )
        return self


def get_portal_settings() -> PortalSettings:
    """Read afresh on each call (entry points call it once; tests change the environment)."""
    return PortalSettings()
