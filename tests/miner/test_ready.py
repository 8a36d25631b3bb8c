"""``GET /ready``: the miner is ready only when its backend is loaded and it is not
draining (what a Kubernetes readiness probe asks, see deploy/k8s/)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.inference.upstream import OpenAIUpstreamBackend
from chutes_subnet.miner import MinerConfig, create_app
from tests.miner_fixtures import DEV_MINER_HOTKEY, start_real_miner
from tests.servers import UvicornThread, free_port

MODEL = "test/ready-1"


def _models_app() -> Starlette:
    async def models(_request):
        return JSONResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    return Starlette(routes=[Route("/v1/models", models)])


def test_ready_follows_the_upstream_engine() -> None:
    port = free_port()
    # the documented form (no /v1): requests go to {url}/v1/..., the probe too
    backend = OpenAIUpstreamBackend(url=f"http://127.0.0.1:{port}", model_id=MODEL)
    app = create_app(MinerConfig(tee="simulated", model_id=MODEL, invoke_auth="none"),
                     hotkey_ss58=DEV_MINER_HOTKEY, backend=backend,
                     provider=SimulatedProvider(gpu_count=1), gate=None)
    with UvicornThread(app) as miner:
        assert httpx.get(miner.url + "/health").status_code == 200  # alive...
        r = httpx.get(miner.url + "/ready")
        assert r.status_code == 503 and r.json() == {"ready": False,
                                                     "reason": "backend_not_ready"}
        with UvicornThread(_models_app(), port=port):  # the engine finished loading
            r = httpx.get(miner.url + "/ready")
            assert r.status_code == 200 and r.json() == {"ready": True}
        assert httpx.get(miner.url + "/ready").status_code == 503  # engine gone again


def test_embedded_backend_is_ready_and_draining_is_not() -> None:
    miner, _ = start_real_miner(MODEL)
    try:
        assert httpx.get(miner.url + "/ready").json() == {"ready": True}
        # what the lifespan does first on shutdown, while in-flight requests finish
        miner.server.config.app.state.miner.draining = True
        r = httpx.get(miner.url + "/ready")
        assert r.status_code == 503 and r.json()["reason"] == "draining"
    finally:
        miner.stop()
