"""Liveness, readiness and Prometheus exposition.

`/healthz` says the process answers (no store access: a store outage must not get healthy
replicas restarted). `/readyz` says a message could be decided right now: the store
answers and rules are loaded; a load balancer sends traffic only to ready replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from gateway.rules.ruleset import RuleSet
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import Metrics
from gateway.store.base import Store, StoreUnavailable

log = logging.getLogger("gateway.health")
# A probe must answer before Kubernetes' own probe timeout (default 1 s … set 3 s): a hung
# store counts as unavailable rather than hanging the probe.
STORE_PING_TIMEOUT_S = 2.0


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
        """200 when ready; 503 naming each check that failed in `not_ready`. The store's
        error text is logged, not shown: the endpoint is unauthenticated."""
        checks = {"store": await self._store_check(), "rules": self._rules_check()}
        not_ready = [name for name, state in checks.items() if state in ("unavailable", "")]
        if not_ready:
            return web.json_response(
                {"status": "not ready", "not_ready": not_ready, "checks": checks}, status=503
            )
        return web.json_response({"status": "ready", "checks": checks})

    async def _store_check(self) -> str:
        try:
            await asyncio.wait_for(self.store.ping(), STORE_PING_TIMEOUT_S)
        except (StoreUnavailable, TimeoutError) as exc:
            log_event(
                log,
                "not-ready",
                logging.WARNING,
                check="store",
                error=str(exc) or type(exc).__name__,
            )
            return "unavailable"
        return "ok"

    def _rules_check(self) -> str:
        """The rule set's version (content hash); empty if no rules are loaded."""
        ruleset = self.rules()
        return ruleset.version if ruleset.rules else ""

    async def metrics_page(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = self.metrics.content_type
        return response
