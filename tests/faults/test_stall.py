"""A miner that stalls: a healthy miner process is frozen with SIGSTOP (the kernel still
accepts its TCP connections, nothing ever answers), then thawed with SIGCONT.

Expected: the validator's per-miner timeout fires, its round ends on time, the frozen
miner is scored down (reason ``timeout``) and withdrawn from the gateway registry while
the other keeps its weight, and the next rounds run normally (the thawed miner comes
back). Meanwhile the gateway's read timeout fires for a request routed to the frozen
instance: 502 ``X-E2E-Retry: instance``, the client re-seals for the healthy one, and
the caller gets its answer.

The ``stall`` fault (an app that never answers) is covered by tests/e2e/test_validator.py.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from chutes_subnet.client import AsyncE2EETransport
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED, reference_completion
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from tests.reliability_harness import LoopbackSubnet
from tests.servers import UvicornThread

# slow: freezes a miner process and runs validator rounds (about 12 s on 2 busy cores)
pytestmark = pytest.mark.slow

TIMEOUT = 2.0        # validator, per miner
READ_TIMEOUT = 1.0   # gateway, silence from a miner before it gives up


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    with LoopbackSubnet(tmp_path_factory.mktemp("stall")) as s:
        s.add_miner("steady")
        s.add_miner("staller")
        s.wait_miners()
        yield s


async def _ask(http: httpx.AsyncClient, url: str, i: int) -> tuple[float, str]:
    body = {"model": DEFAULT_MODEL_ID, "max_tokens": 3,
            "messages": [{"role": "user", "content": f"stall {i}"}]}
    t0 = time.monotonic()
    resp = await http.post(f"{url}/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    text = resp.json()["choices"][0]["message"]["content"]
    assert text == reference_completion("/v1/chat/completions", body, seed=DEFAULT_SEED)
    return time.monotonic() - t0, text


async def test_stalled_miner_times_out_is_scored_down_and_the_loop_continues(subnet, tmp_path):
    steady, staller = subnet.miner("steady"), subnet.miner("staller")
    registry = MemoryInstanceRegistry()
    validator = subnet.validator(registry, timeout=TIMEOUT, state_path=tmp_path / "v.sqlite")
    app, key = subnet.gateway_app(registry, MemoryNonceStore(),
                                  GatewayConfig(read_timeout=READ_TIMEOUT, failure_cooldown=30))
    try:
        first = await validator.run_round()
        assert first.result_for(staller.uid).ok and first.result_for(steady.uid).ok
        assert first.ema[staller.uid] > 0 and first.weights[staller.uid] > 0
        stalled_instance = next(r.instance_id for r in registry.list_verified()
                                if r.uid == staller.uid)

        staller.signal(signal.SIGSTOP)
        try:
            # the gateway: requests routed to the frozen instance time out and move over
            with UvicornThread(app) as gw:
                async with httpx.AsyncClient(
                        transport=AsyncE2EETransport(verify="gateway"), timeout=30,
                        headers={"Authorization": f"Bearer {key}"}) as http:
                    took = [await _ask(http, gw.url, i) for i in range(4)]
                    # what the gateway saw, as the key owner can read it back
                    journal = (await http.get(f"{gw.url}/v1/requests?limit=50")).json()["requests"]
            timed_out = [e for e in journal if e["instance_id"] == stalled_instance]
            assert [e["status"] for e in timed_out] == [502], journal  # once, then benched
            assert [e["status"] for e in journal if e["instance_id"] != stalled_instance] == [200] * 4
            assert max(t for t, _ in took) < READ_TIMEOUT + 5

            # the validator: its timeout fires, the round ends, the staller is scored down
            second = await validator.run_round()
        finally:
            staller.signal(signal.SIGCONT)
        res = second.result_for(staller.uid)
        assert not res.ok and res.reason == "timeout", res
        assert second.duration_s < TIMEOUT + 5
        assert second.result_for(steady.uid).ok
        assert 0 <= second.ema[staller.uid] < first.ema[staller.uid]
        assert second.weights[steady.uid] > first.weights[steady.uid]
        assert second.weights.get(staller.uid, 0.0) < first.weights[staller.uid]
        assert [r.uid for r in registry.list_verified()] == [steady.uid]

        # the loop continues: the thawed miner passes again and is published again
        third = await validator.run_round()
        assert third.round_index == second.round_index + 1
        assert third.result_for(staller.uid).ok and third.result_for(steady.uid).ok
        assert third.ema[staller.uid] > second.ema[staller.uid]
        assert sorted(r.uid for r in registry.list_verified()) == sorted([steady.uid, staller.uid])
    finally:
        await validator.aclose()
        # the harness SIGCONTs before stopping anyway; make sure it is still alive here
        assert staller.alive() and steady.alive()
