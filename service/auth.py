"""Requestor authorization from the transport (SPEC §3).

A request is accepted when any of these holds: its source address is in
``OLV_REQUESTER_NETWORKS``; its ``X-API-Key`` is one of ``OLV_REQUESTER_API_KEYS``; or it
comes from a trusted proxy (``OLV_TRUSTED_PROXIES``) that forwards a verified client
certificate subject in ``X-SSL-Client-S-DN`` listed in ``OLV_REQUESTER_CERT_SUBJECTS``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from olv.config import Networks, Settings


@dataclass(frozen=True, slots=True)
class Requester:
    identity: str  # what the audit trail records; never an API key itself
    authorized: bool


@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parsed once per distinct client address: requesters are few and repeat constantly."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _in(address: str, networks: Networks) -> bool:
    ip = _address(address)
    return ip is not None and any(ip in net for net in networks)


def _normal_dn(dn: str) -> str:
    """Subjects compare without regard to spaces after separators or letter case of keys."""
    parts = [p.strip() for p in dn.replace(";", ",").split(",") if p.strip()]
    normal = []
    for part in parts:
        key, _, value = part.partition("=")
        normal.append(f"{key.strip().upper()}={value.strip()}")
    return ",".join(normal)


def identify(environ: Mapping[str, str], settings: Settings) -> Requester:
    address = environ.get("REMOTE_ADDR", "")
    api_key = environ.get("HTTP_X_API_KEY", "")
    if api_key:
        for allowed in settings.requester_api_keys:
            if hmac.compare_digest(api_key.encode(), allowed.encode()):
                digest = hashlib.sha256(api_key.encode()).hexdigest()[:12]
                return Requester(f"api-key:{digest}", True)
    subject = environ.get("HTTP_X_SSL_CLIENT_S_DN", "").strip()
    if subject and _in(address, settings.trusted_proxies):
        wanted = _normal_dn(subject)
        if any(_normal_dn(s) == wanted for s in settings.requester_cert_subjects):
            return Requester(f"cert:{subject}", True)
    if _in(address, settings.requester_networks):
        return Requester(f"ip:{address}", True)
    identity = f"ip:{address}"
    if subject:
        identity += f" cert:{subject}"
    if api_key:
        identity += " api-key:unknown"
    return Requester(identity, False)
