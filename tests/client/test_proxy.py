"""The local E2EE proxy: plain httpx and the OpenAI SDK on localhost, ciphertext beyond."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from chutes_subnet.client.proxy import _split_host, create_proxy_app
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.gateway_fixtures import echo_miner_app, record_for
from tests.servers import UvicornThread

MODEL = "test/echo-1"
MSG = [{"role": "user", "content": "via proxy"}]


@dataclass
class Env:
    proxy: str
    open_proxy: str
    seen: list[dict[str, str]]
    bodies: list[bytes]
    registry: MemoryInstanceRegistry


class Recorder(httpx.AsyncBaseTransport):
    """Keeps every request body the proxy sends upstream."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.inner, self.bodies = httpx.AsyncHTTPTransport(), bodies

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(await request.aread())
        return await self.inner.handle_async_request(request)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    kp = KeyPair.generate()
    seen: list[dict[str, str]] = []
    bodies: list[bytes] = []
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    secret, _ = keys.create("proxy")
    gw_app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                        keys=keys, usage=MemoryUsageMeter())
    with UvicornThread(echo_miner_app(kp, seen=seen)) as miner, UvicornThread(gw_app) as gw:
        registry.upsert(record_for(kp, miner.url, chute_id=chute_id_for_model(MODEL), model=MODEL))
        keyed = create_proxy_app(gw.url, api_key=secret, transport=Recorder(bodies),
                                 verify="gateway")
        open_ = create_proxy_app(gw.url, verify="gateway")
        with UvicornThread(keyed) as p, UvicornThread(open_) as p2:
            yield Env(p.url, p2.url, seen, bodies, registry)


def test_plain_httpx_chat_is_encrypted_upstream(env: Env) -> None:
    env.bodies.clear()
    r = httpx.post(env.proxy + "/v1/chat/completions", json={"model": MODEL, "messages": MSG})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "echo: via proxy"
    invoke_bodies = [b for b in env.bodies if len(b) > 1000]
    assert invoke_bodies and all(b"via proxy" not in b for b in invoke_bodies)
    assert env.seen[-1]["x-e2e-version"] == "2"


def test_openai_sdk_stream_through_proxy(env: Env) -> None:
    client = openai.OpenAI(base_url=env.proxy + "/v1", api_key="unused-locally", max_retries=0)
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model=MODEL, messages=MSG, stream=True))
    assert text == "echo: via proxy"
    out = client.chat.completions.create(model=MODEL, messages=MSG)
    assert out.choices[0].message.content == "echo: via proxy"


def test_models_are_cached_and_health_answers(env: Env) -> None:
    first = httpx.get(env.proxy + "/v1/models").json()
    assert [m["id"] for m in first["data"]] == [MODEL]
    other = record_for(KeyPair.generate(), "http://127.0.0.1:9",
                       chute_id=chute_id_for_model("other"), model="other")
    env.registry.upsert(other)
    try:
        assert httpx.get(env.proxy + "/v1/models").json() == first  # served from cache
    finally:
        env.registry.remove(other.hotkey, other.instance_id)
    assert httpx.get(env.proxy + "/health").json()["status"] == "ok"


def test_without_configured_key_callers_bearer_is_used(env: Env) -> None:
    bad = openai.OpenAI(base_url=env.open_proxy + "/v1", api_key="csk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL, messages=MSG)


def test_unknown_model_maps_to_503_openai_error(env: Env) -> None:
    r = httpx.post(env.proxy + "/v1/chat/completions", json={"model": "ghost", "messages": MSG})
    assert r.status_code == 503
    assert json.loads(r.content)["error"]["type"] == "unavailable"


@pytest.mark.parametrize("value,expected", [
    ("127.0.0.1:8787", ("127.0.0.1", 8787)), ("localhost", ("localhost", None)),
    ("[::1]:9", ("::1", 9)), ("ATTACKER.example:8787", ("attacker.example", 8787)),
    ("evil:1:2", ("evil:1:2", None)), ("127.0.0.1:x", ("127.0.0.1", -1)),
])
def test_host_header_split(value: str, expected: tuple) -> None:
    assert _split_host(value) == expected
