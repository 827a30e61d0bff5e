"""Prometheus metrics, on a registry per gateway instance so tests can run several.

Gauges that need the store (suppression list size, store reachability) are refreshed by
`StoreGauges` every `gateway.metrics_refresh_s`, never on a scrape: a scrape must stay
cheap with ten million suppressions and must not fail when the store does. Counting ten
million suppressions is a full scan of one to three seconds, so the count is repeated only as
often as keeps it under `COUNT_SHARE_OF_TIME` of the store's time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("gateway.runtime.metrics")

MULTIPROCESS_DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"
WEBHOOK_PROVIDERS = ("twilio", "postmark")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True)
class KeyAge:
    """One key the gateway holds, for `gateway_key_age_seconds{kind,id}`. `retired`: kept
    only to verify or decrypt what it made before a rotation (old unsubscribe links must
    verify for 60 days), so its age calls for no rotation."""

    kind: str
    key_id: str
    created_at: datetime
    retired: bool = False


# What `StoreGauges` asks, every refresh, for keys it does not find in the store itself; it
# may be a coroutine function. It raises StoreUnavailable when the store does not answer.
KeySource = Callable[[], Iterable[KeyAge] | Awaitable[Iterable[KeyAge]]]


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "gateway_messages",
            "Outbound messages per recipient by outcome; reason: first block or failure reason",
            ["channel", "outcome", "reason"],
            registry=self.registry,
        )
        self.block_reasons = Counter(
            "gateway_block_reasons",
            "Every reason code of every blocked message (a block may carry several)",
            ["channel", "reason"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "gateway_decision_duration_seconds",
            "Time to gather facts and decide",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_duration_seconds",
            "Time the upstream took to accept or refuse one message",
            ["upstream", "result"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.smtp_sessions = Gauge(
            "gateway_smtp_sessions_in_progress",
            "Open SMTP connections from agents",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "gateway_store_errors",
            "Store operations that failed (each one failed a message closed)",
            ["operation"],
            registry=self.registry,
        )
        self.unsubscribes = Counter(
            "gateway_unsubscribes",
            "Opt-outs taken, by how they arrived",
            ["source"],
            registry=self.registry,
        )
        self.http_requests = Gauge(
            "gateway_http_requests_in_progress",
            "HTTP requests being handled (agents, webhooks, admin API, probes)",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.suppressions = Gauge(
            "gateway_suppressions",
            "Distinct addresses and numbers on the suppression list, counted periodically",
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.store_up = Gauge(
            "gateway_store_up",
            "1 if the store answered the last periodic ping, 0 if it did not",
            multiprocess_mode="min",
            registry=self.registry,
        )
        self.key_age = Gauge(
            "gateway_key_age_seconds",
            "Age of each key the gateway holds, by kind (token, agent, dkim, session, data) "
            "and id, from the creation time recorded in the store",
            ["kind", "id"],
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.key_max_age = Gauge(
            "gateway_key_max_age_seconds",
            "The age past which a key of this kind is due for rotation (configuration)",
            ["kind"],
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.key_retired = Gauge(
            "gateway_key_retired",
            "1 for a key kept only to verify or decrypt what it made before a rotation, 0 for "
            "one in use; such a key needs no rotation",
            ["kind", "id"],
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.webhook_signature_failures = Counter(
            "gateway_webhook_signature_failures",
            "Provider webhooks refused for a missing or wrong signature or credentials, by "
            "provider (twilio, postmark)",
            ["provider"],
            registry=self.registry,
        )
        # Present at 0 from the start, so that the first failure is an increase Prometheus sees.
        for provider in WEBHOOK_PROVIDERS:
            self.webhook_signature_failures.labels(provider)
        self.store_checked = Gauge(
            "gateway_store_last_check_timestamp_seconds",
            "When the store gauges were last refreshed (Unix time)",
            multiprocess_mode="max",
            registry=self.registry,
        )
        self.login_failures = Counter(
            "gateway_login_failures",
            "Sign-ins refused for a wrong password or secret, by ingress (smtp, review)",
            ["ingress"],
            registry=self.registry,
        )
        self.login_lockouts = Counter(
            "gateway_login_lockouts",
            "Lockouts after too many failed sign-ins, by ingress and scope (address, account)",
            ["ingress", "scope"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "gateway_config_reloads",
            "SIGHUP reloads by what was reloaded (rules, accounts) and result (ok, failed)",
            ["kind", "result"],
            registry=self.registry,
        )
        self.connections_refused = Counter(
            "gateway_connections_refused",
            "Connections refused by listener (smtp, http) and the cap they hit (client, total)",
            ["listener", "scope"],
            registry=self.registry,
        )
        self.accept_errors = Counter(
            "gateway_accept_errors",
            "accept() failures by listener (the process out of descriptors, mostly)",
            ["listener"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """With several worker processes (`gateway.workers`), every worker's values merged
        from prometheus_client's multiprocess files, so a scrape of any worker sees all."""
        if MULTIPROCESS_DIRECTORY_ENV in os.environ:
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged)
        return generate_latest(self.registry)
