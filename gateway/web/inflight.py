"""Counts HTTP requests being handled, so SIGTERM can wait for them (and say how many it
had to cut off) and Prometheus can see them."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.runtime.metrics import Metrics


class InFlightRequests:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.count += 1
        self.idle.clear()
        self.metrics.http_requests.inc()
        try:
            return await handler(request)
        finally:
            self.count -= 1
            self.metrics.http_requests.dec()
            if not self.count:
                self.idle.set()

    async def wait_idle(self, timeout: float) -> int:
        """Wait up to `timeout` seconds for every request to finish; how many did not."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), timeout)
        return self.count
