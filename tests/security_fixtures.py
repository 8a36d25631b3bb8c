"""Test support for tests/security/: the real stack, wired like production.

One validator-only miner (embedded model, simulated TEE, btauth/1 gate over a
LocalChain metagraph that tests can swap to model a deregistration) behind one
gateway that signs every forward with the validator's hotkey, plus wallets for every
kind of caller and an API key. Small body limits and a 1 s body timeout keep the
abuse tests fast.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.auth import ValidatorGate, sign_headers
from chutes_subnet.chain import LocalChain, Metagraph
from chutes_subnet.e2ee import KeyPair, RequestContext, v1, v2
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app as create_gateway
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.httpserver import server_options
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import InstanceIdentity, MinerConfig
from chutes_subnet.miner import create_app as create_miner
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from tests.miner_fixtures import miner_record
from tests.servers import UvicornThread

__all__ = ["Stack", "security_stack", "seal_invoke", "CHAT", "LIMIT", "BODY_TIMEOUT"]

CHAT = "/v1/chat/completions"
LIMIT = 256 * 1024
BODY_TIMEOUT = 1.0
#: name -> (validator permit, stake); "retired" is a validator that gets deregistered
CALLERS = {"miner": (False, 0.0), "validator": (True, 1000.0), "weak": (True, 1.0),
           "nopermit": (False, 5000.0), "retired": (True, 1000.0)}
MIN_STAKE = 10.0


@dataclass
class Stack:
    miner_url: str
    gateway_url: str
    inst: InstanceIdentity
    wallets: dict[str, Any]
    miner_hotkey: str
    api_key: str
    chain: LocalChain
    keys: MemoryApiKeyStore
    miner_keypair: KeyPair
    miner_app: Any
    metagraph: list[Metagraph] = field(default_factory=list)

    def sign(self, who: str, path: str, body: bytes) -> dict[str, str]:
        """btauth/1 headers from ``who`` for a POST to the miner."""
        return sign_headers(self.wallets[who], method="POST", path=path, body=body,
                            receiver_ss58=self.miner_hotkey)

    def refresh_metagraph(self) -> None:
        """What the miner's MetagraphCache does on its next tick."""
        self.metagraph[0] = asyncio.run(self.chain.metagraph())


def seal_invoke(inst: InstanceIdentity, payload: dict[str, Any], *, version: int, nonce: str,
                stream: bool = False) -> tuple[dict[str, str], bytes, Any]:
    """Invoke headers (without auth), envelope and client session for ``inst``."""
    pk = base64.b64decode(inst.e2e_pubkey)
    headers = {"X-Chute-Id": inst.chute_id, "X-Instance-Id": inst.instance_id,
               "X-E2E-Nonce": nonce, "X-E2E-Stream": "true" if stream else "false",
               "X-E2E-Path": CHAT, "Content-Type": "application/octet-stream"}
    if version == 2:
        ctx = RequestContext(inst.chute_id, inst.instance_id, nonce, CHAT, stream)
        blob, session = v2.seal_request(pk, ctx, payload)
        headers["X-E2E-Version"] = "2"
    else:
        blob, session = v1.seal_request(pk, payload)
    return headers, blob, session


@contextlib.contextmanager
def security_stack(tmp_root: str) -> Iterator[Stack]:
    """Start the miner and the signing gateway on loopback; stop both at exit."""
    wallets = {n: ensure_dev_wallet(n, "hot", tmp_root) for n in (*CALLERS, "stranger")}
    chain = LocalChain(":memory:", netuid=9)
    for name, (permit, stake) in CALLERS.items():
        chain.register(hotkey_ss58(wallets[name]), coldkey_ss58(wallets[name]), stake=stake,
                       validator_permit=permit)
    holder = [asyncio.run(chain.metagraph())]
    miner_hotkey = hotkey_ss58(wallets["miner"])
    gate = ValidatorGate(miner_hotkey, lambda: holder[0], min_stake=MIN_STAKE)
    cfg = MinerConfig(tee="simulated", max_body_bytes=LIMIT,
                      body_timeout=BODY_TIMEOUT, invoke_auth="validator", serve_axon=False)
    miner_app = create_miner(cfg, hotkey_ss58=miner_hotkey, backend=make_backend("embedded"),
                             provider=SimulatedProvider(gpu_count=1), gate=gate)
    inst = miner_app.state.instance

    def signer(method: str, path: str, body: bytes, receiver: str) -> dict[str, str]:
        return sign_headers(wallets["validator"], method=method, path=path, body=body,
                            receiver_ss58=receiver)

    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    api_key, _ = keys.create("security-tests")
    gw_app = create_gateway(GatewayConfig(max_body_bytes=LIMIT, nonces_per_instance=8,
                                          body_timeout=BODY_TIMEOUT),
                            registry=registry, nonce_store=MemoryNonceStore(), keys=keys,
                            usage=MemoryUsageMeter(), forward_signer=signer)
    # The servers run with the project's production uvicorn settings (bounded headers).
    with UvicornThread(miner_app, **server_options()) as miner, \
            UvicornThread(gw_app, **server_options()) as gateway:
        registry.upsert(miner_record(inst, miner.url))
        yield Stack(miner.url, gateway.url, inst, wallets, miner_hotkey, api_key, chain, keys,
                    miner_app.state.miner.keypair, miner_app, holder)
