"""Prometheus metrics of one miner instance (a private registry per app).

Only counts, sizes and timings: labels are fixed small vocabularies (route, status,
reason code, token kind), never request content.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["MinerMetrics", "CONTENT_TYPE_LATEST"]

_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_TPS_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class MinerMetrics:
    """Counters, gauges and histograms exposed on ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("chutes_miner_requests", "Requests answered, by route and status",
                                ["route", "status"], registry=r)
        self.errors = Counter("chutes_miner_errors", "Refused or failed requests, by reason code",
                              ["reason"], registry=r)
        self.tokens = Counter("chutes_miner_tokens", "Tokens processed, by kind",
                              ["kind"], registry=r)
        self.in_flight = Gauge("chutes_miner_in_flight", "Inference requests in progress",
                               registry=r)
        self.capacity = Gauge("chutes_miner_capacity", "Concurrency limit of this instance",
                              registry=r)
        self.ttft = Histogram("chutes_miner_ttft_seconds",
                              "Time from request receipt to the first generated chunk",
                              ["mode"], buckets=_TTFT_BUCKETS, registry=r)
        self.tokens_per_second = Histogram("chutes_miner_tokens_per_second",
                                           "Completion tokens per second of one request",
                                           ["mode"], buckets=_TPS_BUCKETS, registry=r)
        self.attestations = Counter("chutes_miner_attestations",
                                    "Attestation requests answered, by outcome",
                                    ["outcome"], registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def error(self, reason: str) -> None:
        self.errors.labels(reason).inc()

    def usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        if prompt_tokens > 0:
            self.tokens.labels("prompt").inc(prompt_tokens)
        if completion_tokens > 0:
            self.tokens.labels("completion").inc(completion_tokens)
