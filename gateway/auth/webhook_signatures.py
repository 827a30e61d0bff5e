"""Twilio's webhook signature: base64(HMAC-SHA1(auth token, URL + sorted name+value pairs)).

Written against Twilio's published algorithm rather than importing the SDK, which is only a
test dependency; the tests check it against the SDK's own RequestValidator.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    by_name: dict[str, set[str]] = {}
    for name, value in params:
        by_name.setdefault(name, set()).add(value)
    signed = url + "".join(
        name + value for name in sorted(by_name) for value in sorted(by_name[name])
    )
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """The URL with and without its default port: Twilio signs either form."""
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return [url]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    with_port = urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    without = (
        urlunsplit(parts._replace(netloc=host))
        if port == DEFAULT_PORTS.get(parts.scheme)
        else with_port
    )
    return list(dict.fromkeys([url, with_port, without]))


def signature_matches(
    auth_token: str, urls: Iterable[str], params: list[tuple[str, str]], signature: str
) -> bool:
    if not auth_token or not signature:
        return False
    expected = signature.encode("utf-8", "replace")
    return any(
        hmac.compare_digest(compute_signature(auth_token, variant, params).encode(), expected)
        for url in urls
        for variant in url_variants(url)
    )
