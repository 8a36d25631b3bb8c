"""Prometheus metrics and the validator's small HTTP API.

Each :class:`ValidatorMetrics` owns its own ``CollectorRegistry`` (several validators
can live in one test process). Labels are uids, reason codes and outcome names only:
bounded, and never secret. :func:`create_metrics_app` serves ``GET /metrics``,
``GET /scores`` (the score table as JSON), ``GET /health`` (liveness) and ``GET /ready``
(a round completed recently). Chain health: the time and block of the last successful
weight submission, blocks since it, and the last round's duration.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from .results import RoundReport, reason_kind
from .table import ScoreRow

__all__ = ["ValidatorMetrics", "create_metrics_app"]


class ValidatorMetrics:
    """The validator's Prometheus series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rounds = Counter("chutes_validator_rounds", "Rounds completed", registry=r)
        self.round_seconds = Histogram(
            "chutes_validator_round_seconds", "Wall time of a round", registry=r,
            buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200))
        self.last_round_block = Gauge("chutes_validator_last_round_block",
                                      "Block of the last round", registry=r)
        self.miners_evaluated = Gauge("chutes_validator_miners_evaluated",
                                      "Miners evaluated in the last round", registry=r)
        self.miners_attested = Gauge("chutes_validator_miners_attested",
                                     "Miners with valid attestation in the last round", registry=r)
        self.instances_evaluated = Gauge(
            "chutes_validator_instances_evaluated",
            "Instances evaluated in the last round (a fleet counts each)", registry=r)
        self.instances_passed = Gauge(
            "chutes_validator_instances_passed",
            "Instances attested and without failure in the last round", registry=r)
        self.failures = Counter("chutes_validator_miner_failures",
                                "Failed miner evaluations by reason", ["kind", "reason"],
                                registry=r)
        self.attestations = Counter("chutes_validator_attestations",
                                    "Attestation outcomes", ["outcome"], registry=r)
        self.score = Gauge("chutes_validator_score_ema", "EMA score per uid", ["uid"], registry=r)
        self.weight = Gauge("chutes_validator_weight", "Planned weight per uid", ["uid"],
                            registry=r)
        self.tokens_per_s = Gauge("chutes_validator_miner_tokens_per_second",
                                  "Median output tokens/s in the last round (a fleet: summed over its passing instances)", ["uid"], registry=r)
        self.ttft = Gauge("chutes_validator_miner_ttft_seconds",
                          "Median time to first token in the last round (a fleet: its best instance)", ["uid"], registry=r)
        self.weights_submissions = Counter("chutes_validator_weight_submissions",
                                           "set_weights outcomes", ["outcome"], registry=r)
        # chain health: is this validator still moving its weights?
        self.last_weights_set_time = Gauge(
            "chutes_validator_last_weights_set_timestamp_seconds",
            "Unix time of the last successful weight submission (0: none yet)", registry=r)
        self.last_weights_set_block = Gauge(
            "chutes_validator_last_weights_set_block",
            "Block of the last successful weight submission (0: none yet)", registry=r)
        self.blocks_since_weights = Gauge(
            "chutes_validator_blocks_since_weights_set",
            "Blocks from the last successful weight submission to the last round "
            "(NaN before the first)", registry=r)
        self.last_round_duration = Gauge("chutes_validator_last_round_duration_seconds",
                                         "Wall time of the last round", registry=r)
        self.last_round_time = Gauge("chutes_validator_last_round_timestamp_seconds",
                                     "Unix time the last round ended (0: none yet)", registry=r)
        self.blocks_since_weights.set(float("nan"))
        self._weights_block: int | None = None
        self.last_round_at: float | None = None

    def observe_round(self, report: RoundReport) -> None:
        """Update every series from one round's report."""
        now = time.time()
        self.rounds.inc()
        self.last_round_at = now
        self.last_round_time.set(now)
        self.last_round_duration.set(report.duration_s)
        if report.weights_result is not None and report.weights_result.success:
            self._weights_block = report.weights_result.block or report.block
            self.last_weights_set_time.set(now)
            self.last_weights_set_block.set(self._weights_block)
        if self._weights_block is not None:
            self.blocks_since_weights.set(max(0, report.block - self._weights_block))
        self.round_seconds.observe(report.duration_s)
        self.last_round_block.set(report.block)
        uids = list(dict.fromkeys(r.uid for r in report.results))
        self.miners_evaluated.set(len(uids))
        self.miners_attested.set(len({r.uid for r in report.results if r.attested}))
        self.instances_evaluated.set(sum(1 for r in report.results if r.instance_url))
        self.instances_passed.set(sum(1 for r in report.results if r.ok))
        for r in report.results:
            if not r.attestation_cached and r.instance_url is not None:  # a challenge ran
                self.attestations.labels("ok" if r.attested else "rejected").inc()
            if r.reason:
                self.failures.labels(reason_kind(r.reason) or "", r.reason).inc()
        for uid in uids:  # a fleet: its instances' throughput summed, its best TTFT
            group = [r for r in report.results_for(uid) if r.ok]
            ttfts = [r.ttft_s for r in group if r.ttft_s is not None]
            self.tokens_per_s.labels(str(uid)).set(sum(r.tokens_per_s for r in group))
            self.ttft.labels(str(uid)).set(min(ttfts) if ttfts else float("nan"))
        for series in (self.score, self.weight):
            series.clear()
        for n, value in report.ema.items():
            self.score.labels(str(n)).set(value)
        for n, value in report.weights.items():
            self.weight.labels(str(n)).set(value)
        if report.weights_result is not None:
            self.weights_submissions.labels(
                "ok" if report.weights_result.success else "refused").inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


def create_metrics_app(metrics: ValidatorMetrics,
                       score_rows: Callable[[], list[ScoreRow]], *,
                       stale_after: float = 7200.0) -> FastAPI:
    """``/metrics``, ``/scores``, ``/health`` (liveness) and ``/ready`` for one validator.

    ``/ready`` is 200 once a round has completed and the last one ended less than
    ``stale_after`` seconds ago (a stuck loop turns it 503).
    """
    app = FastAPI(title="chutes-subnet validator", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get("/metrics")
    def get_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/scores")
    def get_scores() -> JSONResponse:
        from dataclasses import asdict

        return JSONResponse([asdict(r) for r in score_rows()])

    @app.get("/health")
    def get_health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def get_ready() -> JSONResponse:
        last = metrics.last_round_at
        if last is None:
            return JSONResponse({"ready": False, "reason": "no_round_yet"}, status_code=503)
        age = time.time() - last
        if age > stale_after:
            return JSONResponse({"ready": False, "reason": "rounds_stalled",
                                 "last_round_age_s": round(age, 1)}, status_code=503)
        return JSONResponse({"ready": True, "last_round_age_s": round(age, 1)})

    return app
