"""Development faults are wrappers installed only when configured: the production
invoke path carries no fault checks; each fault's behaviour on a real miner (here) and
how a validator round judges it (tests/e2e/test_validator.py)."""

from __future__ import annotations

import base64
import inspect
import re

import httpx
import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.inference import DEFAULT_SEED, make_backend, reference_completion
from chutes_subnet.miner import MinerConfig, create_app
from chutes_subnet.miner import invoke as invoke_module
from chutes_subnet.miner.invoke import InvokeEndpoint
from tests.miner_fixtures import CHAT, payload, sealed, start_miner, stream_text

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def _app(fault: str | None):
    backend = make_backend("embedded")
    app = create_app(MinerConfig(tee="simulated", fault=fault), hotkey_ss58=HOTKEY,
                     backend=backend, provider=SimulatedProvider(), gate=None)
    invoke = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/e2e/invoke")
    return app, backend, invoke


def test_the_invoke_hot_path_has_no_fault_checks() -> None:
    assert not re.search(r"\bfaults?\b", inspect.getsource(invoke_module))  # "default" is fine


def test_without_a_fault_nothing_is_wrapped() -> None:
    app, backend, invoke = _app(None)
    assert isinstance(invoke, InvokeEndpoint)
    assert app.state.miner.backend is backend
    assert isinstance(app.state.miner.provider, SimulatedProvider)


@pytest.mark.parametrize("fault,wrapped", [("wrong-tokens", "backend"), ("stall", "invoke"),
                                           ("debug-quote", "provider"),
                                           ("foreign-hotkey", "provider")])
def test_each_fault_wraps_exactly_one_part(fault: str, wrapped: str) -> None:
    app, backend, invoke = _app(fault)
    state = app.state.miner
    assert (state.backend is not backend) == (wrapped == "backend")
    assert (not isinstance(invoke, InvokeEndpoint)) == (wrapped == "invoke")
    assert (not isinstance(state.provider, SimulatedProvider)) == (wrapped == "provider")


# --- each fault's behaviour on a real miner ----------------------------------------

def test_wrong_tokens_fault_corrupts_the_answer(wallets) -> None:
    cfg = MinerConfig(tee="simulated", invoke_auth="none",
                      fault="wrong-tokens")
    server, inst = start_miner(cfg, wallets, None)
    try:
        headers, blob, session = sealed(inst)
        r = httpx.post(server.url + "/e2e/invoke", content=blob, headers=headers)
        text = session.open_response(r.content)["choices"][0]["message"]["content"]
        expected = reference_completion(CHAT, payload(), seed=DEFAULT_SEED)
        assert len(text) == len(expected) and text != expected
        headers, blob, session = sealed(inst, stream=True)
        r = httpx.post(server.url + "/e2e/invoke", content=blob, headers=headers)
        assert stream_text(2, session, r.content) == text
    finally:
        server.stop()


def test_stall_fault_never_answers(wallets) -> None:
    cfg = MinerConfig(tee="simulated", invoke_auth="none", fault="stall")
    server, inst = start_miner(cfg, wallets, None)
    try:
        headers, blob, _ = sealed(inst)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/e2e/invoke", content=blob, headers=headers, timeout=0.5)
    finally:
        server.stop()


@pytest.mark.parametrize("fault,reason", [("debug-quote", "debug_td"),
                                          ("foreign-hotkey", "binding_mismatch")])
def test_attestation_faults_are_caught_by_the_verifier(wallets, fault: str, reason: str) -> None:
    cfg = MinerConfig(tee="simulated", invoke_auth="none", fault=fault)
    server, inst = start_miner(cfg, wallets, None)
    try:
        nonce = bytes(32)
        r = httpx.post(server.url + "/attest", json={"nonce": nonce.hex()})
        verdict = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True) \
            .verify(Evidence.from_wire(r.json()), nonce=nonce,
                    e2e_pubkey=base64.b64decode(inst.e2e_pubkey), hotkey_ss58=inst.hotkey,
                    chute_id=inst.chute_id)
        assert not verdict.ok and reason in {str(x.code) for x in verdict.reasons}
    finally:
        server.stop()
