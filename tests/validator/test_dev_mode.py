"""Development mode cannot leak into production.

Before: ``CHUTES_VALIDATOR_DEV=1`` alone turned a finney validator into one that
accepts simulated (forgeable) evidence. Now the switch is a command-line flag only,
refused on finney/test/public endpoints, and discovery marks simulated instances.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace

import httpx
import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.eventlog import workload_event
from chutes_subnet.attestation.verify.manifest import WorkloadManifest
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.validator import cli as vcli
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.gateway_fixtures import record_for

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def _args(*argv: str):
    return vcli.build_parser().parse_args(list(argv))


def _simulated_evidence(chute: str):
    provider = SimulatedProvider(seed=b"dev", gpu_count=8)
    d = "sha256:" + "11" * 32
    provider.measure_workload(WorkloadManifest(
        chute_id=chute, model_id="m", model_revision="r", weights_digest=d,
        tokenizer_digest=d, engine="embedded", engine_version="1", image_digest=d,
        dtype="float64", quantization="none", max_context=64))
    nonce = os.urandom(32)
    return provider.collect(nonce, b"pk", HOTKEY), nonce


@pytest.mark.parametrize("name", ["CHUTES_VALIDATOR_DEV", "CHUTES_VALIDATOR_ALLOW_INSECURE_SIMULATED_TEE",
                                  "CHUTES_VALIDATOR_DANGEROUS_ACCEPT_SIMULATED_TEE"])
def test_environment_alone_never_accepts_simulated_evidence(monkeypatch, caplog, name):
    monkeypatch.setenv(name, "1")
    args = _args("--subtensor.network", "finney", "--collateral.url", "")
    assert args.dev is False
    assert vcli.check_dangerous_flags(args) is None
    assert name in caplog.text and "ignored" in caplog.text
    evidence, nonce = _simulated_evidence("c")
    verdict = vcli._verifier(args).verify(evidence, nonce=nonce, e2e_pubkey=b"pk",
                                          hotkey_ss58=HOTKEY, chute_id="c")
    assert verdict.reason_codes == ("simulated_tee",) and not verdict.simulated


@pytest.mark.parametrize("network", [
    ("--subtensor.network", "finney"), ("--subtensor.network", "test"),
    ("--subtensor.network", "archive"),
    ("--subtensor.chain_endpoint", "wss://entrypoint-finney.opentensor.ai:443"),
    ("--subtensor.chain_endpoint", "ws://34.120.1.1:9944"),
    ("--subtensor.chain_endpoint", "ws://devnet.example.com:9944"),
])
def test_dangerous_flag_is_refused_on_real_networks(network):
    args = _args(*network, "--dangerous.accept_simulated_tee")
    refusal = vcli.check_dangerous_flags(args)
    assert refusal and "refusing --dangerous.accept_simulated_tee" in refusal
    assert asyncio.run(vcli._run(args)) == 2  # stops before any wallet or chain is opened


@pytest.mark.parametrize("network", [
    ("--chain", "local:/tmp/x.sqlite"), ("--subtensor.network", "local"),
    ("--subtensor.chain_endpoint", "ws://127.0.0.1:9944"),
    ("--subtensor.chain_endpoint", "ws://10.1.2.3:9944"),
])
@pytest.mark.parametrize("flag", ["--dangerous.accept_simulated_tee", "--dev"])
def test_dangerous_flag_on_a_devnet_accepts_simulated_evidence(network, flag):
    args = _args(*network, flag, "--collateral.url", "")
    assert args.dev and vcli.check_dangerous_flags(args) is None
    evidence, nonce = _simulated_evidence("c")
    verdict = vcli._verifier(args).verify(evidence, nonce=nonce, e2e_pubkey=b"pk",
                                          hotkey_ss58=HOTKEY, chute_id="c")
    assert verdict.ok and verdict.simulated, verdict.reasons
    assert verdict.manifest_sha384  # the measured workload was replayed and checked


def test_discovery_marks_simulated_instances():
    registry = MemoryInstanceRegistry()
    keys = MemoryApiKeyStore()
    secret, _ = keys.create("t")
    model = "test/m"
    chute = chute_id_for_model(model)
    kp_real, kp_sim = KeyPair.generate(), KeyPair.generate()
    real = record_for(kp_real, "http://127.0.0.1:1", chute_id=chute, model=model, uid=1)
    registry.upsert(replace(real, simulated=False))
    registry.upsert(record_for(kp_sim, "http://127.0.0.1:2", chute_id=chute, model=model, uid=2))
    app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                     keys=keys, usage=MemoryUsageMeter())

    async def discover():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.get(f"/e2e/instances/{chute}",
                                    headers={"Authorization": f"Bearer {secret}"})

    r = asyncio.run(discover())
    assert r.status_code == 200, r.text
    flags = {i["instance_id"]: i["simulated"] for i in r.json()["instances"]}
    assert flags == {kp_real.instance_id: False, kp_sim.instance_id: True}


def test_workload_event_is_what_the_dev_verifier_replays():
    evidence, _ = _simulated_evidence("c")
    assert evidence.event_log[-1]["digest"] == workload_event(
        WorkloadManifest.from_dict(evidence.workload_manifest)).digest.hex()
