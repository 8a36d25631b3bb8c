"""Gateway behaviour on loopback: real uvicorn gateway -> real uvicorn miner double.

The client side uses the e2ee recipes directly here (the transport is tested in
tests/client/), so every status code of the refusal table is checked on the wire.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chutes_subnet.e2ee import KeyPair, RequestContext, v1, v2
from chutes_subnet.gateway import app as gateway_app
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.sse import SSEParser
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.gateway_fixtures import echo_miner_app, record_for
from tests.servers import UvicornThread, free_port

MODEL = "test/echo-1"
CHUTE = chute_id_for_model(MODEL)
PATH = "/v1/chat/completions"
#: the two echo miners' keys; each instance id is derived from its key
KP_A, KP_B = KeyPair.generate(), KeyPair.generate()
IA, IB = KP_A.instance_id, KP_B.instance_id


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@dataclass
class Stack:
    gw: str
    keys: MemoryApiKeyStore
    usage: MemoryUsageMeter
    registry: MemoryInstanceRegistry
    clock: Clock
    kps: dict[str, KeyPair]
    seen: list[dict[str, str]]
    key: str
    key_id: str
    state: Any = None


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    kp_a, kp_b = KP_A, KP_B
    seen: list[dict[str, str]] = []
    clock = Clock()
    registry = MemoryInstanceRegistry()
    keys, usage = MemoryApiKeyStore(), MemoryUsageMeter()
    secret, rec = keys.create("tester")
    app = create_app(GatewayConfig(nonces_per_instance=4), registry=registry,
                     nonce_store=MemoryNonceStore(clock=clock), keys=keys, usage=usage)
    with UvicornThread(echo_miner_app(kp_a, seen=seen)) as ma, \
            UvicornThread(echo_miner_app(kp_b)) as mb, UvicornThread(app) as gw:
        registry.upsert(record_for(kp_a, ma.url, chute_id=CHUTE,
                                   model=MODEL))
        registry.upsert(record_for(kp_b, mb.url, chute_id=CHUTE,
                                   model=MODEL, score=0.5))
        yield Stack(gw.url, keys, usage, registry, clock, {IA: kp_a, IB: kp_b},
                    seen, secret, rec.key_id, app.state.gateway)


def discover(s: Stack, key: str | None = None) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{s.gw}/e2e/instances/{CHUTE}",
                  headers={"Authorization": f"Bearer {key or s.key}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["nonce_expires_in"] == 55
    return {i["instance_id"]: i for i in body["instances"]}


def invoke(s: Stack, inst: dict[str, Any], nonce: str, *, version: int = 2,
           stream: bool = False, key: str | None = None,
           instance_id: str | None = None) -> tuple[httpx.Response, Any]:
    iid = instance_id or inst["instance_id"]
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi there"}],
               "stream": stream}
    pk = base64.b64decode(inst["e2e_pubkey"])
    headers = {"Authorization": f"Bearer {key or s.key}", "X-Chute-Id": CHUTE,
               "X-Instance-Id": iid, "X-E2E-Nonce": nonce,
               "X-E2E-Stream": "true" if stream else "false", "X-E2E-Path": PATH,
               "Content-Type": "application/octet-stream"}
    if version == 2:
        body, sess = v2.seal_request(pk, RequestContext(CHUTE, iid, nonce, PATH, stream), payload)
        headers["X-E2E-Version"] = "2"
    else:
        body, sess = v1.seal_request(pk, payload)
    return httpx.post(f"{s.gw}/e2e/invoke", headers=headers, content=body, timeout=10), sess


def test_models_lists_live_instances_only(stack: Stack) -> None:
    r = httpx.get(f"{stack.gw}/v1/models")
    assert r.status_code == 200
    assert r.json()["data"] == [{"id": MODEL, "chute_id": CHUTE, "object": "model",
                                 "owned_by": "chutes-subnet"}]


def test_discovery_requires_a_valid_key(stack: Stack) -> None:
    assert httpx.get(f"{stack.gw}/e2e/instances/{CHUTE}").status_code == 401
    r = httpx.get(f"{stack.gw}/e2e/instances/{CHUTE}",
                  headers={"Authorization": "Bearer csk_not-a-key"})
    assert r.status_code == 401 and r.json()["reason"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


def test_discovery_returns_both_instances_with_fresh_nonces(stack: Stack) -> None:
    insts = discover(stack)
    assert set(insts) == {IA, IB}
    for iid, info in insts.items():
        assert info["e2e_pubkey"] == stack.kps[iid].public_b64
        assert len(info["nonces"]) == 4 and len(set(info["nonces"])) == 4
    unknown = httpx.get(f"{stack.gw}/e2e/instances/{chute_id_for_model('nope')}",
                        headers={"Authorization": f"Bearer {stack.key}"})
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown_chute"


def test_known_chute_without_live_instances_is_503_retry_later(stack: Stack) -> None:
    from dataclasses import replace

    model = "test/expired-1"
    other = KeyPair.generate()
    rec = replace(stack.registry.list_verified()[0], instance_id=other.instance_id,
                  e2e_pubkey=other.public_b64, model=model,
                  chute_id=chute_id_for_model(model), expires_at=time.time() - 1)
    stack.registry.upsert(rec)
    r = httpx.get(f"{stack.gw}/e2e/instances/{rec.chute_id}",
                  headers={"Authorization": f"Bearer {stack.key}"})
    assert r.status_code == 503 and r.json()["reason"] == "no_instances"
    assert r.headers["retry-after"] == "5"
    assert stack.registry.remove(rec.hotkey, rec.instance_id)


def test_v2_non_stream_round_trip_is_metered_and_key_not_forwarded(stack: Stack) -> None:
    before = stack.usage.totals(stack.key_id)
    inst = discover(stack)[IA]
    stack.seen.clear()
    r, sess = invoke(stack, inst, inst["nonces"][0])
    assert r.status_code == 200, r.text
    out = sess.open_response(r.content)
    assert out["choices"][0]["message"]["content"] == "echo: hi there"
    after = stack.usage.totals(stack.key_id)
    assert after.requests == before.requests + 1
    assert after.completion_tokens - before.completion_tokens == 3
    fwd = stack.seen[0]
    assert "authorization" not in fwd
    assert fwd["x-e2e-nonce"] == inst["nonces"][0] and fwd["x-e2e-version"] == "2"


def test_v2_stream_passes_through_and_meters_sse_usage(stack: Stack) -> None:
    before = stack.usage.totals(stack.key_id)
    inst = discover(stack)[IB]
    r, sess = invoke(stack, inst, inst["nonces"][0], stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    opener, text = sess.stream_opener(), ""
    for data in SSEParser().feed(r.content):
        ev = json.loads(data) if data != "[DONE]" else {}
        if "e2e" in ev:
            line = opener.open(ev["e2e"]).decode()
            text += json.loads(line[6:])["choices"][0]["delta"]["content"]
        elif "e2e_final" in ev:
            assert opener.open_final(ev["e2e_final"])["chunks"] == 3
    opener.close()
    assert text == "echo: hi there"
    after = stack.usage.totals(stack.key_id)
    assert after.prompt_tokens - before.prompt_tokens == 3
    assert after.completion_tokens - before.completion_tokens == 3


def test_v1_round_trip(stack: Stack) -> None:
    inst = discover(stack)[IA]
    r, key = invoke(stack, inst, inst["nonces"][0], version=1)
    assert r.status_code == 200
    assert v1.open_response(key, r.content)["choices"][0]["message"]["content"] == "echo: hi there"


def test_replayed_nonce_is_refused_409(stack: Stack) -> None:
    inst = discover(stack)[IA]
    assert invoke(stack, inst, inst["nonces"][0])[0].status_code == 200
    r, _ = invoke(stack, inst, inst["nonces"][0])
    assert r.status_code == 409 and r.json()["reason"] == "nonce_used"


def test_nonce_for_another_instance_is_refused_403_and_not_burned(stack: Stack) -> None:
    insts = discover(stack)
    nonce_b = insts[IB]["nonces"][0]
    r, _ = invoke(stack, insts[IA], nonce_b)
    assert r.status_code == 403 and r.json()["reason"] == "nonce_scope"
    assert invoke(stack, insts[IB], nonce_b)[0].status_code == 200


def test_nonce_of_another_key_is_refused_403(stack: Stack) -> None:
    other, _ = stack.keys.create("other")
    inst = discover(stack)[IA]
    r, _ = invoke(stack, inst, inst["nonces"][0], key=other)
    assert r.status_code == 403


def test_expired_nonce_is_refused_410(stack: Stack) -> None:
    inst = discover(stack)[IA]
    stack.clock.t += 91
    try:
        r, _ = invoke(stack, inst, inst["nonces"][0])
    finally:
        stack.clock.t -= 91
    assert r.status_code == 410 and r.json()["reason"] == "nonce_expired"


def test_unknown_key_on_invoke_is_refused_401(stack: Stack) -> None:
    inst = discover(stack)[IA]
    r, _ = invoke(stack, inst, inst["nonces"][0], key="csk_forged")
    assert r.status_code == 401


def test_over_quota_key_is_refused_429_with_retry_after(stack: Stack) -> None:
    small, rec = stack.keys.create("small", quota_tokens=5)
    inst = discover(stack, small)[IA]
    assert invoke(stack, inst, inst["nonces"][0], key=small)[0].status_code == 200
    assert stack.usage.totals(rec.key_id).total_tokens == 6
    r, _ = invoke(stack, inst, inst["nonces"][1], key=small)
    assert r.status_code == 429 and r.json()["reason"] == "quota_exhausted"
    assert int(r.headers["retry-after"]) > 0


def test_rate_limited_key_gets_429(stack: Stack) -> None:
    slow, _ = stack.keys.create("slow", rate=0.01, burst=1)
    assert httpx.get(f"{stack.gw}/e2e/instances/{CHUTE}",
                     headers={"Authorization": f"Bearer {slow}"}).status_code == 200
    r = httpx.get(f"{stack.gw}/e2e/instances/{CHUTE}", headers={"Authorization": f"Bearer {slow}"})
    assert r.status_code == 429 and r.json()["reason"] == "rate_limited"
    assert int(r.headers["retry-after"]) >= 1


@pytest.mark.parametrize("header,value,status", [
    ("X-E2E-Path", "/admin", 400),
    ("X-E2E-Version", "7", 400),
    ("X-E2E-Stream", "maybe", 400),
    ("X-Instance-Id", "inst-gone", 503),
])
def test_malformed_or_unroutable_invokes(stack: Stack, header: str, value: str,
                                         status: int) -> None:
    inst = discover(stack)[IA]
    headers = {"Authorization": f"Bearer {stack.key}", "X-Chute-Id": CHUTE,
               "X-Instance-Id": IA, "X-E2E-Nonce": inst["nonces"][0],
               "X-E2E-Stream": "false", "X-E2E-Path": PATH, header: value}
    r = httpx.post(f"{stack.gw}/e2e/invoke", headers=headers, content=b"x" * 2000)
    assert r.status_code == status, r.text


def test_oversized_envelope_is_refused_413(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}", "X-Chute-Id": CHUTE,
               "X-Instance-Id": IA, "X-E2E-Nonce": "n", "X-E2E-Path": PATH}
    r = httpx.post(f"{stack.gw}/e2e/invoke", headers=headers,
                   content=b"\0" * (4 * 1024 * 1024 + 1))
    assert r.status_code == 413


def test_dead_miner_gives_502_with_retry_hint_and_is_benched() -> None:
    kp, kp_dead = KeyPair.generate(), KeyPair.generate()
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    secret, _ = keys.create("k")
    app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                     keys=keys, usage=MemoryUsageMeter())
    dead = f"http://127.0.0.1:{free_port()}"
    with UvicornThread(echo_miner_app(kp, fail_status=500)) as bad, UvicornThread(app) as gw:
        registry.upsert(record_for(kp_dead, dead, chute_id=CHUTE, model=MODEL))
        registry.upsert(record_for(kp, bad.url, chute_id=CHUTE, model=MODEL))
        s = Stack(gw.url, keys, MemoryUsageMeter(), registry, Clock(), {}, [], secret, "")
        insts = discover(s)
        for iid, reason in ((kp_dead.instance_id, "miner_unreachable"),
                            (kp.instance_id, "miner_error")):
            r, _ = invoke(s, insts[iid], insts[iid]["nonces"][0])
            assert r.status_code == 502 and r.json()["reason"] == reason
            assert r.headers["x-e2e-retry"] == "instance"
        state = app.state.gateway
        assert state.balancer.is_benched(kp_dead.instance_id)
        assert state.balancer.is_benched(kp.instance_id)


def test_journal_shows_only_ids_sizes_and_usage_to_the_key_owner(stack: Stack) -> None:
    inst = discover(stack)[IA]
    nonce = inst["nonces"][1]
    r, _sess = invoke(stack, inst, nonce, stream=True)
    assert r.status_code == 200
    j = httpx.get(f"{stack.gw}/v1/requests", headers={"Authorization": f"Bearer {stack.key}"})
    assert j.status_code == 200
    entry = j.json()["requests"][0]
    assert entry["instance_id"] == IA and entry["nonce_prefix"] == nonce[:8]
    assert entry["stream"] is True and entry["e2e_version"] == 2 and entry["status"] == 200
    assert entry["request_bytes"] > 1088 and entry["response_bytes"] == len(r.content)
    assert entry["completion_tokens"] > 0
    assert "hi there" not in j.text and "echo" not in j.text
    other, _ = stack.keys.create("other")
    j2 = httpx.get(f"{stack.gw}/v1/requests", headers={"Authorization": f"Bearer {other}"})
    assert j2.json()["requests"] == []
    assert httpx.get(f"{stack.gw}/v1/requests").status_code == 401


def test_served_tokens_per_instance_feed_organic_scoring(stack: Stack) -> None:
    stack.state.take_served()
    inst = discover(stack)[IB]
    r, _ = invoke(stack, inst, inst["nonces"][0])
    assert r.status_code == 200
    served = stack.state.take_served()
    assert served == {IB: 3}  # the echo miner reports 3 completion tokens
    assert stack.state.take_served() == {}


def test_public_api_lists() -> None:
    assert gateway_app.__all__ == ["create_app"]
