"""Round work in worker processes gives the same verdicts as in-process: attestation
verification (accept and reject) and the embedded model's exact answers, then a full
round on loopback with real miners (one honest, one tampering with its quote, one
answering wrongly) judged through the pool."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.challenges import ChallengeBook
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.inference import DEFAULT_SEED, run_generation
from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
from chutes_subnet.validator.attestor import Attestor
from chutes_subnet.validator.workers import WorkerPool
from tests import validator_fixtures as vf

# slow: starts a worker process pool (about 8 s on 2 busy cores)
pytestmark = pytest.mark.slow

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


@pytest.fixture(scope="module")
def pool():
    p = WorkerPool(2, vf.dev_verifier)  # a module-level factory: picklable for spawn
    p.warm_up()
    yield p
    p.close()


def _evidence(nonce: bytes, key: KeyPair) -> Evidence:
    provider = SimulatedProvider()
    return Evidence.from_wire(provider.collect(nonce, key.public_bytes, HOTKEY).to_wire())


def test_verdicts_match_in_process(pool: WorkerPool) -> None:
    key, nonce = KeyPair.generate(), os.urandom(32)
    evidence, now = _evidence(nonce, key), int(time.time())
    here = vf.dev_verifier()

    async def both(**kw):
        return (await pool.verify(evidence, now=now, **kw),
                here.verify(evidence, now=now, **kw))

    ok_there, ok_here = asyncio.run(both(nonce=nonce, e2e_pubkey=key.public_bytes,
                                         hotkey_ss58=HOTKEY))
    assert ok_there.ok and ok_there.reason_codes == ok_here.reason_codes == ()
    bad_there, bad_here = asyncio.run(both(nonce=os.urandom(32), e2e_pubkey=key.public_bytes,
                                           hotkey_ss58=HOTKEY))
    assert not bad_there.ok and bad_there.reason_codes == bad_here.reason_codes != ()


def test_answers_are_bit_identical(pool: WorkerPool) -> None:
    bodies = [("/v1/chat/completions", {"messages": [{"role": "user", "content": f"p{i}"}],
                                        "max_tokens": 12}) for i in range(3)]
    bodies.append(("/v1/completions", {"prompt": "once upon", "max_tokens": 9}))

    async def there():
        return await asyncio.gather(*(pool.generate(p, b, DEFAULT_SEED) for p, b in bodies))

    here = [run_generation(p, b, seed=DEFAULT_SEED) for p, b in bodies]
    assert asyncio.run(there()) == [(r.text, r.completion_tokens) for r in here]


def test_a_verifier_with_its_own_nonce_book_verifies_in_process(pool: WorkerPool) -> None:
    verifier = vf.dev_verifier()
    assert Attestor(verifier, None, None, ttl=60, rechallenge_probability=0,
                    pool=pool)._pool is pool
    verifier.challenges = ChallengeBook(ttl=60)
    assert Attestor(verifier, None, None, ttl=60, rechallenge_probability=0,
                    pool=pool)._pool is None


def test_a_round_through_the_pool(pool: WorkerPool, tmp_path) -> None:
    faults = {"honest": None, "debug": "debug-quote", "wrong": "wrong-tokens"}
    with vf.local_subnet(tmp_path, faults) as subnet:
        bench = BenchmarkConfig(prompts_per_miner=2, max_tokens=12, verify_sample=2)
        config = ValidatorConfig(concurrency=4, timeout=10, dangerous_accept_simulated_tee=True,
                                 benchmark=bench)
        validator = Validator(config, chain=subnet.chain, wallet=subnet.validator_wallet,
                              verifier=vf.dev_verifier(), state=ValidatorState(tmp_path / "v.db"),
                              pool=pool)

        async def go():
            try:
                return await validator.run_round()
            finally:
                await validator.aclose()

        report = asyncio.run(go())
        honest = report.result_for(subnet.by_name("honest").uid)
        assert honest.ok and honest.verified == 2  # both answers recomputed in a worker
        assert report.result_for(subnet.by_name("debug").uid).reason == "attestation:debug_td"
        assert report.result_for(subnet.by_name("wrong").uid).reason == "wrong_output"
