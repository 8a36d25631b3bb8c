"""Cold-start honesty: a miner whose engine has not loaded its model gives no evidence
(503 warming_up), so no validator attests it and no gateway routes to it; once the
engine answers, the same instance attests."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import MinerConfig, create_app
from tests.miner_fixtures import DEV_MINER_HOTKEY
from tests.servers import UvicornThread, free_port

MODEL = "acme/big-model"


def _engine(loaded: dict[str, bool]) -> Starlette:
    async def models(_request):  # vLLM answers /v1/models only once the weights are loaded
        if not loaded["yes"]:
            return JSONResponse({"error": "loading"}, status_code=503)
        return JSONResponse({"object": "list", "data": [{"id": MODEL}]})

    return Starlette(routes=[Route("/v1/models", models)])


def test_no_evidence_before_the_model_is_loaded() -> None:
    loaded = {"yes": False}
    port = free_port()
    backend = make_backend("openai", url=f"http://127.0.0.1:{port}", model_id=MODEL)
    app = create_app(MinerConfig(tee="simulated", model_id=MODEL, invoke_auth="none"),
                     hotkey_ss58=DEV_MINER_HOTKEY, backend=backend,
                     provider=SimulatedProvider(gpu_count=1), gate=None)
    challenge = {"nonce": "cd" * 32}
    with UvicornThread(app) as miner:
        r = httpx.post(miner.url + "/attest", json=challenge, timeout=30)  # engine not even up
        assert r.status_code == 503 and r.json()["reason"] == "warming_up"
        assert r.headers["retry-after"] == "10"
        with UvicornThread(_engine(loaded), port=port):
            r = httpx.post(miner.url + "/attest", json=challenge, timeout=30)  # loading
            assert r.status_code == 503 and r.json()["reason"] == "warming_up"
            assert httpx.get(miner.url + "/ready").status_code == 503
            loaded["yes"] = True
            r = httpx.post(miner.url + "/attest", json=challenge, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["instance_id"] == app.state.instance.instance_id
