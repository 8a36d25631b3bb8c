"""The E2EE httpx transports with the OpenAI SDK, through a real gateway to real miners."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from chutes_subnet.client import AsyncE2EETransport, E2EETransport
from chutes_subnet.client.transport import plaintext_refusal
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.errors import (
    DecryptionError,
    DowngradeError,
    NoInstancesError,
    NoncesExhaustedError,
    ReceiptError,
    StreamIntegrityError,
)
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.gateway_fixtures import echo_miner_app, record_for
from tests.servers import UvicornThread, free_port

MODEL = "test/echo-1"
V1_MODEL = "test/legacy-v1"
DEAD_MODEL = "test/dead"
MSG = [{"role": "user", "content": "tell me a secret"}]


@dataclass
class Env:
    gw: str
    key: str
    seen: list[dict[str, str]]
    usage: MemoryUsageMeter
    key_id: str


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    kp, kp1, kp2 = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()
    seen: list[dict[str, str]] = []
    registry, keys, usage = MemoryInstanceRegistry(), MemoryApiKeyStore(), MemoryUsageMeter()
    secret, rec = keys.create("sdk")
    app = create_app(GatewayConfig(nonces_per_instance=3), registry=registry,
                     nonce_store=MemoryNonceStore(), keys=keys, usage=usage)
    with UvicornThread(echo_miner_app(kp, seen=seen)) as m, \
            UvicornThread(echo_miner_app(kp1, seen=seen)) as m1, UvicornThread(app) as gw:
        registry.upsert(record_for(kp, m.url, chute_id=chute_id_for_model(MODEL), model=MODEL))
        legacy = record_for(kp1, m1.url, chute_id=chute_id_for_model(V1_MODEL), model=V1_MODEL)
        registry.upsert(dataclasses.replace(legacy, e2e_versions=(1,)))
        dead = f"http://127.0.0.1:{free_port()}"
        registry.upsert(record_for(kp2, dead, chute_id=chute_id_for_model(DEAD_MODEL),
                                   model=DEAD_MODEL))
        yield Env(gw.url, secret, seen, usage, rec.key_id)


def sdk(env: Env, **kw: object) -> openai.OpenAI:
    http = httpx.Client(transport=E2EETransport(**{"verify": "gateway", **kw}))  # type: ignore[arg-type]
    return openai.OpenAI(base_url=env.gw + "/v1", api_key=env.key, http_client=http,
                         max_retries=0)


def test_sdk_chat_non_stream_v2(env: Env) -> None:
    env.seen.clear()
    out = sdk(env).chat.completions.create(model=MODEL, messages=MSG)
    assert out.choices[0].message.content == "echo: tell me a secret"
    assert env.seen[-1]["x-e2e-version"] == "2"


def test_sdk_chat_stream_v2(env: Env) -> None:
    env.seen.clear()
    chunks = sdk(env).chat.completions.create(model=MODEL, messages=MSG, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "echo: tell me a secret"
    assert env.seen[-1]["x-e2e-version"] == "2" and env.seen[-1]["x-e2e-stream"] == "true"


def test_many_calls_refresh_the_nonce_pool(env: Env) -> None:
    client = sdk(env)
    for i in range(8):  # pool holds 3 nonces: refills at least twice
        out = client.chat.completions.create(model=MODEL, messages=[{"role": "user",
                                                                     "content": str(i)}])
        assert out.choices[0].message.content == f"echo: {i}"


def test_v1_only_instances_need_the_explicit_opt_in(env: Env) -> None:
    env.seen.clear()
    client = sdk(env, versions=(2, 1))
    out = client.chat.completions.create(model=V1_MODEL, messages=MSG)
    assert out.choices[0].message.content == "echo: tell me a secret"
    text = "".join(c.choices[0].delta.content or ""
                   for c in client.chat.completions.create(model=V1_MODEL, messages=MSG,
                                                           stream=True))
    assert text == "echo: tell me a secret"
    assert all("x-e2e-version" not in h for h in env.seen)


def test_default_client_refuses_v1_only_instance(env: Env) -> None:
    with pytest.raises(DowngradeError, match=r"versions=\(2, 1\)"):
        sdk(env).chat.completions.create(model=V1_MODEL, messages=MSG)


def test_non_model_requests_pass_through(env: Env) -> None:
    models = sdk(env).models.list()
    assert {m.id for m in models.data} == {MODEL, V1_MODEL, DEAD_MODEL}


def test_unknown_model_is_a_clear_error(env: Env) -> None:
    with httpx.Client(transport=E2EETransport(env.key, verify="gateway")) as http:
        with pytest.raises(NoInstancesError):
            http.post(env.gw + "/v1/chat/completions", json={"model": "nope", "messages": MSG})


def test_unknown_key_surfaces_as_sdk_authentication_error(env: Env) -> None:
    http = httpx.Client(transport=E2EETransport(verify="gateway"))
    client = openai.OpenAI(base_url=env.gw + "/v1", api_key="csk_wrong", http_client=http,
                           max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=MSG)


def test_dead_instance_retries_then_reports_502(env: Env) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        sdk(env).chat.completions.create(model=DEAD_MODEL, messages=MSG)
    assert err.value.status_code == 502


class NonceEater(httpx.BaseTransport):
    """Replaces every nonce offered by discovery with a forged one."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.invokes = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/e2e/invoke":
            self.invokes += 1
        resp = self.inner.handle_request(request)
        if "/e2e/instances/" in request.url.path:
            resp.read()
            body = resp.json()
            for inst in body["instances"]:
                inst["nonces"] = ["f" * 32 for _ in inst["nonces"]]
            return httpx.Response(200, json=body)
        return resp


def test_all_nonces_rejected_is_a_clear_error(env: Env) -> None:
    eater = NonceEater()
    with httpx.Client(transport=E2EETransport(env.key, inner=eater, max_attempts=3, verify="gateway")) as http:
        with pytest.raises(NoncesExhaustedError):
            http.post(env.gw + "/v1/chat/completions", json={"model": MODEL, "messages": MSG})
    assert eater.invokes == 3


class TamperingBox(httpx.BaseTransport):
    """A middle box that rewrites the encrypted SSE events of invoke answers."""

    def __init__(self, mode: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.mode = mode

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if request.url.path != "/e2e/invoke" or request.headers.get("x-e2e-stream") != "true":
            return resp
        resp.read()
        events = [e for e in resp.content.split(b"\n\n") if e]
        enc = [i for i, e in enumerate(events) if b'"e2e"' in e]
        if self.mode == "reorder":
            events[enc[0]], events[enc[1]] = events[enc[1]], events[enc[0]]
        elif self.mode == "drop":
            del events[enc[1]]
        elif self.mode == "duplicate":
            events.insert(enc[1], events[enc[0]])
        elif self.mode == "truncate":
            events = events[: enc[-1] + 1]
        elif self.mode == "truncate_with_done":
            events = [*events[: enc[-1] + 1], b"data: [DONE]"]
        elif self.mode == "flip":
            ev = json.loads(events[enc[0]][6:])
            raw = bytearray(base64.b64decode(ev["e2e"]))
            raw[0] ^= 1
            ev["e2e"] = base64.b64encode(bytes(raw)).decode()
            events[enc[0]] = b"data: " + json.dumps(ev).encode()
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=b"\n\n".join(events) + b"\n\n")


@pytest.mark.parametrize("mode", ["reorder", "drop", "duplicate", "truncate",
                                  "truncate_with_done", "flip"])
def test_v2_detects_a_tampering_middle_box(env: Env, mode: str) -> None:
    http = httpx.Client(transport=E2EETransport(inner=TamperingBox(mode), verify="gateway"))
    client = openai.OpenAI(base_url=env.gw + "/v1", api_key=env.key, http_client=http,
                           max_retries=0)
    with pytest.raises(StreamIntegrityError):
        for _ in client.chat.completions.create(model=MODEL, messages=MSG, stream=True):
            pass


def test_v1_reorder_is_caught_only_by_the_receipt_and_bit_flips_by_the_aead(env: Env) -> None:
    """v1's envelope misses a reorder (the reason v2 exists: its chunks carry random
    nonces and still decrypt); what catches it is the receipt over the exact bytes."""
    http = httpx.Client(transport=E2EETransport(inner=TamperingBox("reorder"), verify="gateway",
                                                versions=(2, 1)))
    client = openai.OpenAI(base_url=env.gw + "/v1", api_key=env.key, http_client=http,
                           max_retries=0)
    with pytest.raises(ReceiptError) as err:
        for _ in client.chat.completions.create(model=V1_MODEL, messages=MSG, stream=True):
            pass
    assert err.value.reason == "wrong_answer"
    http = httpx.Client(transport=E2EETransport(inner=TamperingBox("flip"), verify="gateway",
                                                versions=(2, 1)))
    client = openai.OpenAI(base_url=env.gw + "/v1", api_key=env.key, http_client=http,
                           max_retries=0)
    with pytest.raises(DecryptionError):
        for _ in client.chat.completions.create(model=V1_MODEL, messages=MSG, stream=True):
            pass


async def test_async_sdk_non_stream_and_stream(env: Env) -> None:
    http = httpx.AsyncClient(transport=AsyncE2EETransport(env.key, verify="gateway"))
    client = openai.AsyncOpenAI(base_url=env.gw + "/v1", api_key=env.key, http_client=http,
                                max_retries=0)
    out = await client.chat.completions.create(model=MODEL, messages=MSG)
    assert out.choices[0].message.content == "echo: tell me a secret"
    stream = await client.chat.completions.create(model=MODEL, messages=MSG, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "echo: tell me a secret"
    await http.aclose()


@pytest.mark.parametrize("method,path,body,allowed", [
    ("GET", "/v1/models", b"", True),
    ("DELETE", "/v1/files/x", b"", True),
    ("POST", "/v1/embeddings", b'{"input": "secret"}', False),
    ("POST", "/v1/responses", b'{"input": "secret"}', False),
    ("POST", "/v1/chat/completions", b"not json", False),
    ("PUT", "/v1/anything", b"x", False),
    ("GET", "/v1/models", b"body on a GET", False),
])
def test_plaintext_rule(method: str, path: str, body: bytes, allowed: bool) -> None:
    """Consulted only for requests that are not sealable model calls (no ``model``)."""
    assert (plaintext_refusal(method, path, body) is None) == allowed
