"""HTTP calls from the tests: httpx's own functions, with one TLS context for them all.

httpx builds an SSL context for every client it makes, so for every ``httpx.get`` and
``httpx.post``, and loading the CA certificates into it takes about 25 ms of CPU: the tests'
thousands of calls to servers on loopback spent minutes of a two-core machine on contexts
they never use. ``TLS`` is httpx's default context, built once; pass it as ``verify`` to any
client made without a ``verify`` of its own.
"""

from __future__ import annotations

from typing import Any

import httpx

TLS = httpx.create_ssl_context()


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=TLS, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=TLS, **kwargs)


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=TLS, **kwargs)
