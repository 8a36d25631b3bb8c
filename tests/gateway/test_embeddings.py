"""``/v1/embeddings`` end to end through an envelope (issue 11 item 5, server side):
client -> gateway -> real miner on loopback; the gateway and the miner's host see only
ciphertext, the answer is the embedded model's own vectors. Streams of embeddings and
``/v1/responses`` (deliberately not served) are refused before anything is forwarded."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED
from chutes_subnet.inference.embeddings import reference_embeddings
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.wire.call import SealTarget, seal_call
from chutes_subnet.wire.protocol import EMBEDDINGS_PATH, REFUSED_PATHS, chute_id_for_model
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import UvicornThread

CHUTE = chute_id_for_model(DEFAULT_MODEL_ID)
SECRET_TEXT = "my very private sentence"


@dataclass
class Env:
    gw: str
    key: str
    key_id: str
    usage: MemoryUsageMeter
    miner_url: str


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    miner, inst = start_real_miner(DEFAULT_MODEL_ID)
    registry, keys, usage = MemoryInstanceRegistry(), MemoryApiKeyStore(), MemoryUsageMeter()
    secret, rec = keys.create("embed")
    registry.upsert(miner_record(inst, miner.url))
    app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                     keys=keys, usage=usage)
    try:
        with UvicornThread(app) as gw:
            yield Env(gw.url, secret, rec.key_id, usage, miner.url)
    finally:
        miner.stop()


def _call(env: Env, path: str, payload: dict, *, stream: bool = False):
    auth = {"Authorization": f"Bearer {env.key}"}
    info = httpx.get(f"{env.gw}/e2e/instances/{CHUTE}", headers=auth, timeout=10).json()[
        "instances"][0]
    offer = SealTarget(info["instance_id"], base64.b64decode(info["e2e_pubkey"]), (2,))
    call = seal_call(offer, chute_id=CHUTE, nonce=info["nonces"][0], path=path, stream=stream,
                     payload=payload, version=2, api_key=env.key)
    assert SECRET_TEXT.encode() not in call.body
    resp = httpx.post(f"{env.gw}/e2e/invoke", headers=call.headers, content=call.body,
                      timeout=30)
    return resp, call


def test_embeddings_round_trip_encrypted_and_metered(env: Env) -> None:
    before = env.usage.totals(env.key_id).prompt_tokens
    body = {"input": [SECRET_TEXT, "another"], "encoding_format": "float"}
    resp, call = _call(env, EMBEDDINGS_PATH, body)
    assert resp.status_code == 200, resp.text
    assert SECRET_TEXT.encode() not in resp.content  # ciphertext on the wire
    answer = call.open_json(resp.content)
    assert answer == reference_embeddings(body, seed=DEFAULT_SEED, model_id=DEFAULT_MODEL_ID)
    tokens = len(SECRET_TEXT) + 1 + len("another") + 1
    env.usage.flush()
    assert env.usage.totals(env.key_id).prompt_tokens == before + tokens


def test_a_streamed_embeddings_call_is_refused_at_the_gateway(env: Env) -> None:
    resp, _ = _call(env, EMBEDDINGS_PATH, {"input": SECRET_TEXT}, stream=True)
    assert resp.status_code == 400 and resp.json()["reason"] == "bad_header"
    assert "X-E2E-Stream must be false for /v1/embeddings" in resp.json()["error"]


def test_responses_api_is_not_served(env: Env) -> None:
    assert "/v1/responses" in REFUSED_PATHS
    resp, _ = _call(env, "/v1/responses", {"input": SECRET_TEXT})
    assert resp.status_code == 400 and resp.json()["reason"] == "bad_path"
    # nor is there any plaintext route for it (or for embeddings) on the gateway
    for path in ("/v1/responses", EMBEDDINGS_PATH):
        plain = httpx.post(env.gw + path, json={"input": SECRET_TEXT},
                           headers={"Authorization": f"Bearer {env.key}"})
        assert plain.status_code in (404, 405)
