"""The whole path on loopback: OpenAI SDK + E2EE transport -> gateway (signing each
forward with a validator hotkey, btauth/1) -> the real miner admitting only validators."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from chutes_subnet.auth import ValidatorGate, sign_headers
from chutes_subnet.chain import LocalChain
from chutes_subnet.client import ClientPolicy, E2EETransport
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.inference import DEFAULT_SEED, reference_completion
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from tests.miner_fixtures import miner_record, start_real_miner
from tests.servers import UvicornThread

MODEL = "test/real-miner"
PATH = "/v1/chat/completions"
MSG = [{"role": "user", "content": "a private question"}]


@pytest.mark.parametrize("versions", [(2,), (1,)])
def test_sdk_through_a_signing_gateway_to_a_validator_only_miner(tmp_path, versions) -> None:
    wallets = str(tmp_path)
    miner_w = ensure_dev_wallet("miner", "hot", wallets)
    validator = ensure_dev_wallet("validator", "hot", wallets)
    chain = LocalChain(":memory:", netuid=2)
    chain.register(hotkey_ss58(miner_w), coldkey_ss58(miner_w))
    chain.register(hotkey_ss58(validator), coldkey_ss58(validator), stake=10.0,
                   validator_permit=True)
    snapshot = asyncio.run(chain.metagraph())
    gate = ValidatorGate(hotkey_ss58(miner_w), lambda: snapshot)

    def signer(method: str, path: str, body: bytes, receiver: str) -> dict[str, str]:
        return sign_headers(validator, method=method, path=path, body=body,
                            receiver_ss58=receiver)

    expected = reference_completion(PATH, {"messages": MSG, "max_tokens": 20}, seed=DEFAULT_SEED)
    miner, inst = start_real_miner(MODEL, hotkey=hotkey_ss58(miner_w), gate=gate)
    # the client verifies the (simulated, 1-GPU) instance itself through the gateway's relay
    dev = ClientPolicy.development(gpu_count=1, dangerous_accept_simulated_tee=True)
    try:
        for signing, status in ((signer, 200), (None, 401)):
            registry, keys, usage = (MemoryInstanceRegistry(), MemoryApiKeyStore(),
                                     MemoryUsageMeter())
            secret, rec = keys.create("app")
            registry.upsert(miner_record(inst, miner.url))
            app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                             keys=keys, usage=usage, forward_signer=signing)
            with UvicornThread(app) as gw:
                client = openai.OpenAI(
                    base_url=gw.url + "/v1", api_key=secret, max_retries=0,
                    http_client=httpx.Client(transport=E2EETransport(
                        versions=versions, **({"policy": dev} if signing else
                                              {"verify": "gateway"}))))
                if status != 200:
                    with pytest.raises(openai.AuthenticationError):
                        client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=20)
                    continue
                out = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=20)
                assert out.choices[0].message.content == expected
                text = "".join(c.choices[0].delta.content or "" for c in
                               client.chat.completions.create(model=MODEL, messages=MSG,
                                                              max_tokens=20, stream=True)
                               if c.choices)
                assert text == expected
                totals = usage.totals(rec.key_id)
                assert totals.requests == 2 and totals.completion_tokens == 40
    finally:
        miner.stop()
