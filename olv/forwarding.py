"""Where a request comes from: the TCP peer, or what a trusted proxy wrote (SPEC §3).

The source address is the TCP peer (``REMOTE_ADDR``). When that peer is one of
``OLV_TRUSTED_PROXIES``, the client address is the one the proxy wrote into the forwarding
headers, and only that one: the rightmost entry of ``X-Forwarded-For``, ``Forwarded`` and
``X-Real-IP``, because a proxy appends its own entry after whatever the client sent (or
overwrites the header, which leaves only its entry). Entries to the left of it are the
client's claims and never count.

A proxy need not write all three headers, and one that writes one may pass the others through
from the client. So every forwarding header present must name the same address; if they
disagree, or the proxy's entry is not an IP address (``unknown``, an obfuscated ``_name``),
the source is unknown and no network rule can admit the request. A client can therefore never
obtain another address than the one its proxy wrote, provided the proxy writes at least one
of the headers (the shipped nginx configuration overwrites ``X-Forwarded-For`` and removes
the others). A trusted peer that forwards nothing is itself the source.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from olv.config import Networks, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# CGI names of the forwarding headers. The ASGI front drops header names that contain "_",
# so these can only have come from the hyphenated spellings.
FORWARDING_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
_PROTO = "HTTP_X_FORWARDED_PROTO"
# The same headers as an ASGI server names them (lower case, hyphenated); an underscore
# spelling is another header and never counts.
_ASGI_NAMES = {
    name.removeprefix("HTTP_").lower().replace("_", "-").encode("ascii"): name
    for name in (*FORWARDING_HEADERS, _PROTO)
}


@dataclass(frozen=True, slots=True)
class Source:
    address: IPAddress | None  # None: a trusted proxy forwarded no usable address
    proxy: IPAddress | None  # the trusted proxy that forwarded the request, if any

    def describe(self) -> str:
        """The audit trail's form: ``ip:10.1.2.3``, plus ``via:<proxy>`` when forwarded."""
        text = f"ip:{self.address if self.address is not None else 'unknown'}"
        return text if self.proxy is None else f"{text} via:{self.proxy}"


@lru_cache(maxsize=4096)
def parse_address(text: str) -> IPAddress | None:
    """Parsed once per distinct text: requesters are few and repeat constantly."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def within(address: IPAddress | None, networks: Networks) -> bool:
    return address is not None and any(address in net for net in networks)


def peer_is_trusted_proxy(environ: Mapping[str, str], settings: Settings) -> bool:
    return within(parse_address(environ.get("REMOTE_ADDR", "")), settings.trusted_proxies)


def asgi_environ(peer: str, headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """What :func:`source` and :func:`forwarded_scheme` read, from an ASGI request: the peer
    and the forwarding headers, repeated lines joined with "," as a WSGI server joins them."""
    environ = {"REMOTE_ADDR": peer}
    for name, value in headers:
        key = _ASGI_NAMES.get(name.lower())
        if key is not None:
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def source(environ: Mapping[str, str], settings: Settings) -> Source:
    peer = parse_address(environ.get("REMOTE_ADDR", ""))
    if not within(peer, settings.trusted_proxies):
        return Source(peer, None)
    written = [_last_entry(name, environ[name]) for name in FORWARDING_HEADERS if name in environ]
    if not written:
        return Source(peer, None)
    first = written[0]
    if first is None or any(other != first for other in written[1:]):
        return Source(None, peer)
    return Source(first, peer)


def forwarded_scheme(environ: Mapping[str, str], settings: Settings) -> str | None:
    """``http`` or ``https`` as a trusted proxy wrote it in ``X-Forwarded-Proto``, else None."""
    value = environ.get(_PROTO)
    if value is None or not peer_is_trusted_proxy(environ, settings):
        return None
    scheme = value.rsplit(",", 1)[-1].strip().lower()
    return scheme if scheme in ("http", "https") else None


def _last_entry(name: str, value: str) -> IPAddress | None:
    # Repeated header lines arrive joined with ",", so the last line's last entry is taken.
    # A proxy's own entry never holds a comma (quoted strings only wrap IPv6 and ports).
    entry = value.rsplit(",", 1)[-1].strip()
    if name == "HTTP_FORWARDED":
        node = None
        for pair in entry.split(";"):
            key, _, item = pair.partition("=")
            if key.strip().lower() == "for":
                node = item.strip().strip('"')
        if node is None:
            return None
        entry = node
    return _node_address(entry)


def _node_address(node: str) -> IPAddress | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:567``, ``[::1]``, ``[::1]:567``,
    or a bare IPv6 address."""
    if len(node) > 64:  # longer than any address with port; keeps junk out of the cache
        return None
    if node.startswith("["):
        inside, bracket, _port = node[1:].partition("]")
        return parse_address(inside) if bracket else None
    if node.count(":") == 1:
        node = node.partition(":")[0]
    return parse_address(node)
