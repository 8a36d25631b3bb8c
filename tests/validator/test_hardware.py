"""Hardware counted once (issue 12 item 6).

The attack: one machine (one TDX platform, one set of 8 GPUs) runs two miner
instances under two hotkeys of two coldkeys. Each answers its own challenges with
genuine evidence bound to its own hotkey, so before this both passed and shared the
weight one machine should earn. Here it runs against real miners and a real round.
"""

from __future__ import annotations

import dataclasses

import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.hardware_identity import platform_identity
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
from chutes_subnet.validator.hardware import GPU_REUSED, PLATFORM_REUSED, refuse_shared_hardware
from chutes_subnet.validator.results import AttestationSummary, MinerResult
from tests import validator_fixtures as vf
from tests.vector_files import VECTORS_DIR

MACHINE = b"one-machine-seed"


def _validator(subnet: vf.Subnet, tmp_path) -> Validator:
    cfg = ValidatorConfig(concurrency=4, timeout=5.0, rechallenge_probability=0.0,
                          dangerous_accept_simulated_tee=True,
                          benchmark=BenchmarkConfig(prompts_per_miner=1, max_tokens=8,
                                                    verify_sample=1))
    return Validator(cfg, chain=subnet.chain, wallet=subnet.validator_wallet,
                     verifier=vf.dev_verifier(), state=ValidatorState(tmp_path / "v.sqlite"))


@pytest.fixture
def one_machine(tmp_path):
    with vf.local_subnet(tmp_path, {"a": None, "b": None, "other": None},
                         seeds={"a": MACHINE, "b": MACHINE}) as subnet:
        yield subnet


async def test_two_hotkeys_on_one_machine_earn_for_one_uid_at_most(one_machine, tmp_path):
    subnet = one_machine
    a, b, other = (subnet.by_name(n) for n in ("a", "b", "other"))
    coldkeys = {n.uid: n.coldkey for n in (await subnet.chain.metagraph()).neurons}
    assert coldkeys[a.uid] != coldkeys[b.uid]  # two owners on paper
    validator = _validator(subnet, tmp_path)
    try:
        report = await validator.run_round()
        ra, rb = report.result_for(a.uid), report.result_for(b.uid)
        # both attested with genuine evidence of the same platform and GPUs ...
        assert ra.attestation.platform_id == rb.attestation.platform_id
        assert len(ra.attestation.gpu_ids) == 8
        assert ra.attestation.gpu_ids == rb.attestation.gpu_ids
        # ... and neither is credited: no incumbent, ownership is ambiguous
        assert (ra.reason, rb.reason) == (PLATFORM_REUSED, PLATFORM_REUSED)
        assert "presented by 2 uids" in ra.detail_text
        assert report.result_for(other.uid).ok
        assert report.weights.get(a.uid, 0.0) == 0.0 and report.weights.get(b.uid, 0.0) == 0.0
        assert report.weights[other.uid] == pytest.approx(1.0)
        # refused keys are forgotten: the next round challenges them again
        assert validator.attestor.cached(a.uid) is None
    finally:
        await validator.aclose()


def _ok(uid: int, platform: str | None, gpus: tuple[str, ...] = ()) -> MinerResult:
    summary = dataclasses.replace(
        AttestationSummary(True, f"i{uid}", "c", "m", "k", False, None, None, None, 0, (), 0, 1),
        platform_id=platform, gpu_ids=gpus)
    return MinerResult(uid, f"hk{uid}", f"ck{uid}", "1.2.3.4:1", True, attestation=summary,
                       requests=1, successes=1)


def test_incumbent_keeps_shared_hardware_and_others_are_refused():
    results = [_ok(1, "ppid:aa", ("gpu:1",)), _ok(2, "ppid:aa", ("gpu:2",)),
               _ok(3, "ppid:bb", ("gpu:1",)), _ok(4, "ppid:cc", ("gpu:4",))]
    out, holders = refuse_shared_hardware(results, {"ppid:aa": "hk1", "gpu:1": "hk1"})
    by_uid = {r.uid: r for r in out}
    assert by_uid[1].ok and by_uid[4].ok
    assert by_uid[2].reason == PLATFORM_REUSED and by_uid[3].reason == GPU_REUSED
    assert holders == {"ppid:aa": "hk1", "gpu:1": "hk1", "ppid:cc": "hk4", "gpu:4": "hk4"}
    # the incumbent keeps it next round too; a newcomer never takes it over
    out2, _ = refuse_shared_hardware([_ok(2, "ppid:aa"), _ok(1, "ppid:aa")], holders)
    assert [r.ok for r in out2] == [False, True]


def test_unshared_and_failed_results_pass_through():
    failed = dataclasses.replace(_ok(2, "ppid:aa"), reason="timeout")
    out, holders = refuse_shared_hardware([_ok(1, "ppid:aa"), failed], {})
    assert out[0].ok and out[1].reason == "timeout" and holders == {"ppid:aa": "hk1"}
    assert refuse_shared_hardware([], {}) == ([], {})


def test_platform_identity_is_the_ppid_of_real_quotes():
    raw = (VECTORS_DIR / "tdx" / "tdx_v4_quote.bin").read_bytes()
    assert platform_identity(parse_quote(raw)) == "ppid:811dca2a26b952e85bb6448b097ba4fd"


def test_simulated_machines_differ_by_seed():
    def pid(seed: bytes) -> str:
        ev = SimulatedProvider(seed=seed, gpu_count=0).collect(bytes(32), b"k", "5x")
        return platform_identity(parse_quote(ev.tdx_quote))
    assert pid(b"x") == pid(b"x") != pid(b"y")
    assert pid(b"x").startswith("pck:")
