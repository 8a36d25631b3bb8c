"""The miner's FastAPI application: one attested, end-to-end-encrypted model instance.

Endpoints (wire shapes in :mod:`chutes_subnet.wire`):

* ``POST /attest`` — :mod:`chutes_subnet.miner.attest` (btauth/1, validators only);
* ``POST /e2e/invoke`` — :mod:`chutes_subnet.miner.invoke` (v1 and v2 envelopes);
* ``GET /fleet`` — the instance list this hotkey fronts, signed by the hotkey
  (:mod:`chutes_subnet.miner.fleet`; served when a ``fleet_signer`` is given);
* ``GET /health`` — public status (ids, key fingerprint, load; nothing secret);
* ``GET /ready`` — 200 when the instance can serve now (not draining, and the
  backend is loaded: an OpenAI-compatible upstream lists its models), else 503 —
  what a Kubernetes readiness probe or a load balancer asks;
* ``GET /metrics`` — Prometheus text (counts and timings only);
* ``POST /dangerous/plaintext/invoke`` — only with ``dangerous_plaintext_endpoint``
  and the simulated TEE: the same path without the envelope, for the bench.

The instance's ML-KEM-768 key pair is generated here, in memory, inside the TEE; it is
never written, logged or returned (``app.state.instance`` holds only public facts).
The instance id is derived from its public key (:func:`chutes_subnet.e2ee.
instance_id_for_key`), never configured: a restart is a new key, so a new instance.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from chutes_subnet.attestation.providers.evidence_provider import EvidenceProvider
from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.auth import ValidatorGate
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.inference import Backend
from chutes_subnet.miner.attest import AttestEndpoint
from chutes_subnet.miner.config import MinerConfig
from chutes_subnet.miner.faults import (
    apply_backend_fault,
    apply_invoke_fault,
    apply_provider_fault,
)
from chutes_subnet.miner.fleet import FleetPublisher, fleet_entries
from chutes_subnet.miner.invoke import InvokeEndpoint
from chutes_subnet.miner.limits import ConcurrencyLimiter
from chutes_subnet.miner.metrics import CONTENT_TYPE_LATEST, MinerMetrics
from chutes_subnet.miner.state import InstanceIdentity, MinerState
from chutes_subnet.miner.workload import instance_manifest, measure_workload
from chutes_subnet.nonces import SeenNonceCache
from chutes_subnet.receipts import ReceiptSigner
from chutes_subnet.wire.protocol import FLEET_PATH, NONCE_TTL_SERVER_SECONDS

__all__ = ["PLAINTEXT_PATH", "create_app", "create_metrics_app"]

log = logging.getLogger("chutes_subnet.miner")

PLAINTEXT_PATH = "/dangerous/plaintext/invoke"


def _is_simulated(provider: EvidenceProvider) -> bool:
    return isinstance(provider, SimulatedProvider)


def create_app(config: MinerConfig, *, hotkey_ss58: str, backend: Backend,
               provider: EvidenceProvider, gate: ValidatorGate | None,
               keypair: KeyPair | None = None, fleet_signer: Any | None = None,
               netuid: int = 0) -> FastAPI:
    """Build one miner instance around a backend, an evidence provider and a gate.

    ``gate=None`` disables every caller check (unit tests only). ``keypair=None``
    generates the instance key now; the receipt signing key is always generated here.
    ``fleet_signer`` (the hotkey's keypair) serves ``GET /fleet`` for ``netuid``: this
    instance at ``config.advertised_url``, then ``config.fleet_instances``.
    Faults and the plaintext endpoint are refused unless ``provider`` is the simulated
    one. The backend is closed on shutdown, after uvicorn has let in-flight streams finish.
    """
    simulated = _is_simulated(provider)
    if (config.fault or config.dangerous_plaintext_endpoint) and not simulated:
        raise ValueError("faults and the plaintext endpoint need the simulated TEE provider")
    if not hotkey_ss58:
        raise ValueError("hotkey_ss58 is required")
    # the workload is measured into RTMR3 before the instance key exists
    measure_workload(provider, instance_manifest(config, backend), simulated=simulated)
    keypair = keypair or KeyPair.generate()
    signer = ReceiptSigner.generate()  # with the E2EE key, in memory only, bound by /attest
    instance = InstanceIdentity(
        instance_id=keypair.instance_id,
        chute_id=config.chute_id,
        model_id=config.model_id,
        hotkey=hotkey_ss58,
        e2e_pubkey=keypair.public_b64,
        e2e_fingerprint=keypair.fingerprint,
        simulated=simulated,
        receipt_pubkey=signer.public_b64,
    )
    metrics = MinerMetrics()
    metrics.capacity.set(config.max_concurrency)
    if config.fault is not None:  # development only (simulated TEE checked above)
        backend = apply_backend_fault(config.fault, backend)
        provider = apply_provider_fault(config.fault, provider)
    state = MinerState(
        config=config, instance=instance, keypair=keypair, backend=backend,
        provider=provider, gate=gate,
        seen=SeenNonceCache(ttl=NONCE_TTL_SERVER_SECONDS),
        limiter=ConcurrencyLimiter(config.max_concurrency), metrics=metrics,
        receipt_signer=signer,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("miner instance %s serving chute %s (model %s), e2e key fp=%s%s",
                 instance.instance_id, instance.chute_id, instance.model_id,
                 instance.e2e_fingerprint, " [SIMULATED TEE]" if simulated else "")
        try:
            yield
        finally:
            state.draining = True
            if not await state.limiter.wait_idle(config.shutdown_grace):
                log.warning("shutdown: %d requests still in flight after the grace period",
                            state.limiter.in_flight)
            await backend.aclose()
            log.info("miner instance %s stopped", instance.instance_id)

    routes: list[BaseRoute] = [
        Route("/attest", AttestEndpoint(state), methods=["POST"]),
        Route("/e2e/invoke", apply_invoke_fault(config.fault, InvokeEndpoint(state)),
              methods=["POST"]),
    ]
    if config.dangerous_plaintext_endpoint:
        log.warning("DANGEROUS plaintext endpoint enabled at %s (bench only)", PLAINTEXT_PATH)
        routes.append(Route(PLAINTEXT_PATH,
                            apply_invoke_fault(config.fault, InvokeEndpoint(state, plaintext=True)),
                            methods=["POST"]))
    fleet = _fleet_publisher(config, instance, fleet_signer, netuid)
    if fleet is not None:
        routes.append(Route(FLEET_PATH, fleet.endpoint, methods=["GET"]))
    app = FastAPI(title="chutes-subnet miner", lifespan=lifespan, routes=routes,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.instance = instance
    app.state.miner = state

    @app.get("/health")
    async def health() -> Any:
        body = state.describe()
        return JSONResponse(body, status_code=503 if state.draining else 200)

    @app.get("/ready")
    async def ready() -> Any:
        if state.draining:
            return JSONResponse({"ready": False, "reason": "draining"}, status_code=503)
        probe = getattr(backend, "ready", None)
        if probe is not None and not await probe():
            return JSONResponse({"ready": False, "reason": "backend_not_ready"}, status_code=503)
        return JSONResponse({"ready": True})

    if config.metrics_port is None:  # else served by create_metrics_app on its own port
        @app.get("/metrics")
        async def metrics_text() -> Response:
            return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def _fleet_publisher(config: MinerConfig, instance: InstanceIdentity, signer: Any | None,
                     netuid: int) -> FleetPublisher | None:
    """The ``GET /fleet`` endpoint, or None without a signer (or, for an instance with
    no siblings, without an address of its own to list)."""
    if signer is None:
        return None
    try:
        entries = fleet_entries(config.advertised_url, instance.instance_id,
                                config.fleet_instances)
    except ValueError as exc:
        if config.fleet_instances:
            raise ValueError(f"cannot serve the fleet list: {exc} (set --axon.external_ip "
                             "to the address validators reach this instance at)") from None
        log.info("no GET /fleet: %s", exc)
        return None
    publisher = FleetPublisher(signer, netuid=netuid, entries=entries, ttl=config.fleet_ttl)
    if publisher.hotkey != instance.hotkey:
        raise ValueError("the fleet signer is not this miner's hotkey")
    return publisher


def create_metrics_app(state: MinerState) -> Starlette:
    """``GET /metrics`` alone, for the private metrics port (``--metrics.port``)."""

    async def metrics_text(_request: Any) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics_text, methods=["GET"])])
