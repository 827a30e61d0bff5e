"""Which listener may reach which path, and who may read `/metrics`.

With `[http] internal_listen` set, the main listener (`[http] listen`, the one an operator
exposes to the Internet) serves only what recipients, their browsers and providers must
reach: unsubscribe links (`/u/`), provider webhooks (`/webhooks/`) and the probes
(`/healthz`, `/readyz`). Everything else (the APIs, the console and its single-sign-on
callbacks under `/auth/`, `/metrics`, SCIM) answers 404 there, exactly like a path that does
not exist; `internal_listen` serves every path.

The decision is made on the route aiohttp matched, not on the raw path, so no spelling of a
path (dot segments, percent-encoding) reaches a handler the check did not see. A request is
internal only if its connection was accepted by the internal listener: a connection this
module does not know of (one already gone, say) gets the public paths only.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_PREFIXES = ("/u/", "/webhooks/")
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
METRICS_PATH = "/metrics"


def route_path(request: web.Request) -> str | None:
    """The matched route's pattern (`/u/{token}`), or None when no route matched."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def is_public(path: str | None) -> bool:
    return path is not None and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


class ListenerAccess:
    """The middleware for both rules; `internal_connections` is filled by the internal
    listener (`gateway.web.listener`) with the transports of the connections it accepted."""

    def __init__(self, *, split: bool, metrics_token: str) -> None:
        self.split = split
        self._metrics_token = metrics_token.encode()
        self.internal_connections: set[asyncio.BaseTransport] = set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = route_path(request)
        if self.split and request.transport not in self.internal_connections and not is_public(
            path
        ):
            raise web.HTTPNotFound()
        if path == METRICS_PATH and self._metrics_token and not self._bearer_matches(request):
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                text="GET /metrics needs Authorization: Bearer <http.metrics_token>\n",
            )
        return await handler(request)

    def _bearer_matches(self, request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # Compared in constant time, as bytes (compare_digest refuses non-ASCII str).
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._metrics_token
        )
