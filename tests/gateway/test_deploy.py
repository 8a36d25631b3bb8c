"""Gateway as deployed: a separate process holding no key material, two replicas sharing
one real redis-server, and the public Chutes client (v1) pointed at it unchanged."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from chutes_subnet.client import E2EETransport
from chutes_subnet.e2ee import KeyPair, RequestContext, v2
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore, SQLiteApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter, SQLiteUsageMeter
from chutes_subnet.inference import DEFAULT_SEED, reference_completion
from chutes_subnet.nonces import MemoryNonceStore, RedisNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry, SQLiteInstanceRegistry
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.gateway_fixtures import echo_miner_app, record_for
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import UvicornThread, free_port

MODEL = "test/echo-1"
CHUTE = chute_id_for_model(MODEL)
PATH = "/v1/chat/completions"
MSG = [{"role": "user", "content": "private words"}]

#: Run the gateway CLI with every E2EE/KEM/AEAD/KDF module made unimportable. Ed25519
#: stays importable: the gateway verifies answer receipts (a public key, nothing to decrypt).
_KEYLESS_GATEWAY = """
import sys
class _Refuse:
    BLOCKED = ("chutes_subnet.e2ee", "pqcrypto", "cryptography.hazmat.primitives.ciphers",
               "cryptography.hazmat.primitives.asymmetric.mlkem",
               "cryptography.hazmat.primitives.kdf", "cryptography.fernet")
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in self.BLOCKED):
            raise ImportError("the gateway must not load " + name)
        return None
sys.meta_path.insert(0, _Refuse())
from chutes_subnet.gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:] if proc.stderr else "died")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("gateway did not come up")


def test_keyless_gateway_process_routes_v2_end_to_end(tmp_path: Path) -> None:
    """Client -> keyless gateway process -> the real miner (embedded model, v2)."""
    db, reg_path = tmp_path / "gw.db", tmp_path / "registry.db"
    secret, rec = SQLiteApiKeyStore(db).create("app")
    port = free_port()
    env = {**os.environ, "CHUTES_SUBNET_HOME": str(tmp_path)}
    miner, inst = start_real_miner(MODEL)
    expected = reference_completion(PATH, {"messages": MSG, "max_tokens": 16}, seed=DEFAULT_SEED)
    try:
        SQLiteInstanceRegistry(reg_path).upsert(miner_record(inst, miner.url))
        proc = subprocess.Popen(
            [sys.executable, "-c", _KEYLESS_GATEWAY, "gateway", "--listen", f"127.0.0.1:{port}",
             "--registry", f"sqlite://{reg_path}", "--nonces", f"sqlite://{tmp_path / 'n.db'}",
             "--db", str(db), "--log-level", "warning", "--dangerous-unsigned-forwards"],
            env=env, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_http(url, proc)
            client = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0,
                                   http_client=httpx.Client(transport=E2EETransport(verify="gateway")))
            out = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=16)
            assert out.choices[0].message.content == expected
            text = "".join(c.choices[0].delta.content or "" for c in
                           client.chat.completions.create(model=MODEL, messages=MSG,
                                                          max_tokens=16, stream=True)
                           if c.choices)
            assert text == expected
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    finally:
        miner.stop()
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit status -15)
    assert proc.returncode in (0, -15), proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    usage = SQLiteUsageMeter(db).totals(rec.key_id)
    assert usage.requests == 2 and usage.completion_tokens == 32  # flushed on shutdown


def test_same_nonce_at_two_redis_replicas_is_accepted_exactly_once(redis_server) -> None:
    kp = KeyPair.generate()
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    secret, _ = keys.create("race")
    apps = [create_app(GatewayConfig(nonces_per_instance=16), registry=registry,
                       nonce_store=RedisNonceStore(redis_server.url), keys=keys,
                       usage=MemoryUsageMeter()) for _ in range(2)]
    with UvicornThread(echo_miner_app(kp)) as miner, UvicornThread(apps[0]) as a, \
            UvicornThread(apps[1]) as b:
        registry.upsert(record_for(kp, miner.url, chute_id=CHUTE, model=MODEL))
        auth = {"Authorization": f"Bearer {secret}"}
        nonces = httpx.get(f"{a.url}/e2e/instances/{CHUTE}", headers=auth).json()[
            "instances"][0]["nonces"]
        pk = base64.b64decode(kp.public_b64)

        async def race(nonce: str) -> list[int]:
            body, _ = v2.seal_request(pk, RequestContext(CHUTE, kp.instance_id, nonce, PATH, False),
                                      {"model": MODEL, "messages": MSG})
            headers = {**auth, "X-Chute-Id": CHUTE, "X-Instance-Id": kp.instance_id, "X-E2E-Nonce": nonce,
                       "X-E2E-Stream": "false", "X-E2E-Path": PATH, "X-E2E-Version": "2"}
            async with httpx.AsyncClient(timeout=10) as http:
                rs = await asyncio.gather(*(http.post(f"{u}/e2e/invoke", headers=headers,
                                                      content=body)
                                            for u in (a.url, b.url, a.url, b.url)))
            return sorted(r.status_code for r in rs)

        for nonce in nonces:
            assert asyncio.run(race(nonce)) == [200, 409, 409, 409]


def test_public_chutes_client_v1_through_the_gateway(chutes_client_venv) -> None:
    """The public Chutes client (v1), unchanged -> gateway -> the real miner."""
    from tests import interop

    registry, keys, usage = MemoryInstanceRegistry(), MemoryApiKeyStore(), MemoryUsageMeter()
    secret, rec = keys.create("public-client")
    app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                     keys=keys, usage=usage)
    miner, inst = start_real_miner(MODEL)
    expected = reference_completion(PATH, {"messages": MSG, "max_tokens": 16}, seed=DEFAULT_SEED)
    try:
        with UvicornThread(app) as gw:
            registry.upsert(dataclasses.replace(miner_record(inst, miner.url), e2e_versions=(1,)))
            result = interop.run_client("""
                import httpx, openai
                from chutes_e2ee import ChutesE2EETransport
                t = ChutesE2EETransport(api_key=DATA["key"], api_base=DATA["gw"])
                c = openai.OpenAI(base_url=DATA["gw"] + "/v1", api_key=DATA["key"],
                                  http_client=httpx.Client(transport=t), max_retries=0)
                out = c.chat.completions.create(model=DATA["model"], messages=DATA["msg"],
                                                max_tokens=16)
                chunks = c.chat.completions.create(model=DATA["model"], messages=DATA["msg"],
                                                   max_tokens=16, stream=True)
                text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
                RESULT = [out.choices[0].message.content, text]
            """, {"key": secret, "gw": gw.url, "model": MODEL, "msg": MSG}, timeout=120)
    finally:
        miner.stop()
    assert result == [expected, expected]
    totals = usage.totals(rec.key_id)
    assert totals.requests == 2 and totals.completion_tokens == 32
