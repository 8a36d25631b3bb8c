"""The gateway's operations endpoints: ``GET /ready`` and ``GET /metrics``.

``/health`` (liveness, in :mod:`.app`) answers as long as the process serves HTTP.
``/ready`` (readiness) answers 200 only when the gateway can route a request now:
the nonce store answers, the instance registry can be read and holds at least one
live attested instance. ``/metrics`` is Prometheus text: invoke outcomes by status,
refusals by reason code, live instances and requests in flight. Labels are status
codes and reason codes only (bounded); no key ids, no instance ids.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

from chutes_subnet.errors import NonceStoreUnavailable
from chutes_subnet.nonces import NonceScope

if TYPE_CHECKING:
    from chutes_subnet.gateway.state import GatewayState

__all__ = ["GatewayMetrics", "add_health_routes"]

_PROBE_SCOPE = NonceScope("_ready", "_ready", "_ready")
_READY_TIMEOUT = 2.0


class GatewayMetrics:
    """Prometheus series of one gateway replica (its own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.invokes = Counter("chutes_gateway_invokes", "Invokes answered, by HTTP status",
                               ["status"], registry=self.registry)
        self.refusals = Counter("chutes_gateway_refusals", "Refused requests, by reason code",
                                ["reason"], registry=self.registry)
        self._state: GatewayState | None = None
        self.registry.register(_LiveCollector(self))

    def bind(self, state: GatewayState) -> None:
        """Let the scrape-time gauges read ``state``."""
        self._state = state

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    """Gauges computed at scrape time (no per-request bookkeeping)."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.metrics._state
        if state is None:
            return
        live = GaugeMetricFamily("chutes_gateway_live_instances",
                                 "Attested instances the registry offers now")
        try:
            records = state.registry.list_verified()
        except Exception:  # noqa: BLE001 - a scrape must not fail on a store outage
            records = []
        live.add_metric([], len(records))
        yield live
        inflight = GaugeMetricFamily("chutes_gateway_in_flight",
                                     "Invokes this replica is forwarding now")
        inflight.add_metric([], sum(state.balancer.inflight(r.instance_id) for r in records))
        yield inflight


async def readiness(state: GatewayState) -> tuple[bool, dict[str, Any]]:
    """``(ready, details)``: nonce store answers, registry readable with live instances."""
    details: dict[str, Any] = {}
    try:
        await asyncio.wait_for(state.nonce_store.consume(secrets.token_urlsafe(16), _PROBE_SCOPE),
                               _READY_TIMEOUT)
        details["nonce_store"] = "ok"
    except (NonceStoreUnavailable, TimeoutError, OSError):
        details["nonce_store"] = "unavailable"
    try:
        records = await asyncio.wait_for(asyncio.to_thread(state.registry.list_verified),
                                         _READY_TIMEOUT)
        details["registry"] = "ok"
        details["live_instances"] = len(records)
    except Exception:  # noqa: BLE001 - any registry failure means "not ready"
        details["registry"] = "unavailable"
        details["live_instances"] = 0
    ready = details["nonce_store"] == "ok" and details["registry"] == "ok" \
        and details["live_instances"] > 0
    if not ready:
        details["reason"] = ("nonce_store_unavailable" if details["nonce_store"] != "ok" else
                             "registry_unavailable" if details["registry"] != "ok" else
                             "no_live_instances")
    return ready, details


def add_health_routes(app: FastAPI, state: GatewayState, metrics: GatewayMetrics) -> None:
    """``GET /ready`` and ``GET /metrics``."""
    metrics.bind(state)

    @app.get("/ready")
    async def ready() -> Any:
        ok, details = await readiness(state)
        return JSONResponse({"ready": ok, **details}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
