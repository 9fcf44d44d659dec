"""Typed settings read from the environment (prefix ``OLV_``).

Lists are written comma-separated (``OLV_NAICS=12345,67890``); certificate subjects contain
commas themselves, so ``OLV_REQUESTER_CERT_SUBJECTS`` is separated by ``;``.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///olv.db"
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")

Networks = list[ipaddress.IPv4Network | ipaddress.IPv6Network]


def _split(value: object, sep: str) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(sep) if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLV_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    # A PostgreSQL standby for the read-mostly look-ups ("": none); see olv.read_replica.
    database_read_url: str = ""
    database_read_max_lag_seconds: float = Field(5.0, gt=0)
    maintenance: bool = False
    timezone: str = "UTC"

    # --- SOAP service -------------------------------------------------------------------------
    verify_past_days: int = Field(183, ge=0)
    verify_future_days: int = Field(0, ge=0)
    naics: Annotated[list[str], NoDecode] = Field(default_factory=list)
    requester_networks: Annotated[Networks, NoDecode] = Field(
        default_factory=lambda: [ipaddress.ip_network(n) for n in LOOPBACK_NETWORKS]
    )
    requester_api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    requester_cert_subjects: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_proxies: Annotated[Networks, NoDecode] = Field(
        default_factory=lambda: [ipaddress.ip_network(n) for n in LOOPBACK_NETWORKS]
    )
    public_url: str = ""  # base of the service address in served WSDLs; "": the request's own
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    deadline_seconds: float = Field(4.5, gt=0)
    audit_retention_days: int = Field(190, ge=183)
    audit_flush_seconds: float = Field(0.5, gt=0)
    audit_batch_size: int = Field(500, ge=1)
    soap_workers: int = Field(0, ge=0)  # 0: one per core
    # A request's head must arrive this soon after the connection opens (or its first byte on a
    # kept-alive connection), and its body may stall no longer than this: a client that sends
    # half a request and waits is dropped rather than holding a connection (slowloris).
    soap_header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    soap_body_idle_seconds: float = Field(10.0, gt=0, le=600)

    # --- both servers -------------------------------------------------------------------------
    # Who may read /metrics (by source address, judged like any request: olv.forwarding).
    metrics_networks: Annotated[Networks, NoDecode] = Field(
        default_factory=lambda: [ipaddress.ip_network(n) for n in LOOPBACK_NETWORKS]
    )

    @field_validator("naics", "requester_api_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        return _split(value, ",")

    @field_validator("requester_cert_subjects", mode="before")
    @classmethod
    def _semicolon_list(cls, value: object) -> object:
        return _split(value, ";")

    @field_validator("requester_networks", "trusted_proxies", "metrics_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        items = _split(value, ",")
        if isinstance(items, list):
            try:
                return [ipaddress.ip_network(str(item), strict=False) for item in items]
            except ValueError:
                raise ValueError(
                    "should be comma-separated addresses or networks such as 10.0.0.0/8,::1"
                ) from None
        return items

    @field_validator("public_url")
    @classmethod
    def _public_base(cls, value: str) -> str:
        """An absolute http(s) URL without query, fragment or credentials; no trailing "/"."""
        value = value.strip()
        if not value:
            return ""
        problem = "must be an http:// or https:// URL without query, fragment or user name"
        parts = urlsplit(value)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (
            parts.scheme.lower() not in ("http", "https")
            or not parts.hostname
            or not port_ok
            or "@" in parts.netloc
            or any(ch in value for ch in '?#"<>\\')
            or any(ch.isspace() or not ch.isprintable() for ch in value)
        ):
            raise ValueError(problem)  # not echoed: it might hold a password
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)  # better to fail at start-up than at the first query
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "should be an IANA time zone name such as UTC or America/New_York"
            ) from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env."""
    return Settings()
