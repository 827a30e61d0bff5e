"""Prometheus metrics, on a registry per gateway instance so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
