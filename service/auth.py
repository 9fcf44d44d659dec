"""Requestor authorization from the transport (SPEC §3).

A request is accepted when any of these holds: its source address (see
:mod:`olv.forwarding`) is in ``OLV_REQUESTER_NETWORKS``; its ``X-API-Key`` is one of
``OLV_REQUESTER_API_KEYS``; or its TCP peer is a trusted proxy (``OLV_TRUSTED_PROXIES``) that
forwards a verified client certificate subject in ``X-SSL-Client-S-DN`` listed in
``OLV_REQUESTER_CERT_SUBJECTS``. Only hyphenated header spellings reach this module: the ASGI
front drops names with "_", so ``X_API_Key`` or ``X_SSL_Client_S_DN`` are never read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from olv.config import Settings
from olv.forwarding import FORWARDING_HEADERS, peer_is_trusted_proxy, source, within


@dataclass(frozen=True, slots=True)
class Requester:
    identity: str  # what the audit trail records; never an API key itself
    authorized: bool


def _normal_dn(dn: str) -> str:
    """Subjects compare without regard to spaces after separators or letter case of keys."""
    parts = [p.strip() for p in dn.replace(";", ",").split(",") if p.strip()]
    normal = []
    for part in parts:
        key, _, value = part.partition("=")
        normal.append(f"{key.strip().upper()}={value.strip()}")
    return ",".join(normal)


# The credentials a request carries, as environ keys. Each may come once: the ASGI front
# leaves one sent twice empty (service.asgi), where list headers are joined.
API_KEY = "HTTP_X_API_KEY"
CLIENT_SUBJECT = "HTTP_X_SSL_CLIENT_S_DN"
CREDENTIAL_HEADERS = frozenset({API_KEY, CLIENT_SUBJECT})

# Everything :func:`identify` reads from a request.
_INPUTS = ("REMOTE_ADDR", *FORWARDING_HEADERS, API_KEY, CLIENT_SUBJECT)
_CACHED = 1024  # distinct requesters remembered per process; a full cache starts afresh


class Identities:
    """:func:`identify` for one set of settings, remembered per distinct input: requesters
    are few and send thousands of requests each, and the answer depends on nothing else."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._known: dict[tuple[str | None, ...], Requester] = {}

    def __call__(self, environ: Mapping[str, str]) -> Requester:
        key = tuple([environ.get(name) for name in _INPUTS])
        known = self._known.get(key)
        if known is None:
            known = identify(environ, self.settings)
            if len(self._known) >= _CACHED:
                self._known.clear()
            self._known[key] = known
        return known


def identify(environ: Mapping[str, str], settings: Settings) -> Requester:
    """The requester as the audit records it: credential first, then the real source."""
    where = source(environ, settings)
    origin = where.describe()
    api_key = environ.get(API_KEY, "")
    if api_key:
        for allowed in settings.requester_api_keys:
            if hmac.compare_digest(api_key.encode(), allowed.encode()):
                digest = hashlib.sha256(api_key.encode()).hexdigest()[:12]
                return Requester(f"api-key:{digest} {origin}", True)
    # A subject from anyone but a trusted proxy is a client's claim: not used, not recorded.
    subject = ""
    if peer_is_trusted_proxy(environ, settings):
        subject = environ.get(CLIENT_SUBJECT, "").strip()
    if subject:
        wanted = _normal_dn(subject)
        if any(_normal_dn(s) == wanted for s in settings.requester_cert_subjects):
            return Requester(f"cert:{subject} {origin}", True)
    if within(where.address, settings.requester_networks):
        return Requester(origin, True)
    identity = f"cert:{subject} {origin}" if subject else origin
    if api_key:
        identity += " api-key:unknown"
    return Requester(identity, False)
