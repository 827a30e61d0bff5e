"""Liveness, readiness and Prometheus exposition."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.metrics import Metrics
from gateway.rules import RuleSet
from gateway.store.base import Store, StoreUnavailable


class HealthRoutes:
    def __init__(self, store: Store, rules: Callable[[], RuleSet], metrics: Metrics) -> None:
        self.store = store
        self.rules = rules
        self.metrics = metrics

    def register(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_page)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready only when a message could be decided right now: store answers, rules loaded."""
        checks: dict[str, str] = {"rules": self.rules().version}
        try:
            await self.store.ping()
            checks["store"] = "ok"
        except StoreUnavailable as exc:
            checks["store"] = f"unavailable: {exc}"
            return web.json_response({"status": "not ready", "checks": checks}, status=503)
        return web.json_response({"status": "ready", "checks": checks})

    async def metrics_page(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = self.metrics.content_type
        return response
