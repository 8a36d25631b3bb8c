"""A validator process killed with SIGKILL mid-round restarts with the last committed
scores: real subprocess (neurons/validator.py), real miners, LocalChain file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chutes_subnet.validator import ValidatorState
from tests import validator_fixtures as vf

# slow: kills and restarts a validator process mid-round (about 20 s on 2 busy cores)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 1.5


def _cmd(subnet: vf.Subnet, tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "neurons" / "validator.py"),
            "--chain", f"local:{subnet.chain_path}", "--netuid", "7",
            "--wallet.path", str(tmp / "wallets"), "--wallet.name", "validator",
            "--state.path", str(tmp / "state.sqlite"), "--dev",
            "--neuron.timeout", str(TIMEOUT), "--neuron.prompts", "1",
            "--neuron.max_tokens", "8", "--neuron.round_blocks", "1",
            "--neuron.poll_interval", "0.05", "--metrics.port", "0",
            "--gateway.registry", "none", "--collateral.url", "", *extra]


def _snapshot(tmp: Path):
    state = ValidatorState(tmp / "state.sqlite")
    try:
        return state.load()
    finally:
        state.close()


def _wait_round(tmp: Path, at_least: int, proc: subprocess.Popen, deadline: float):
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        if (tmp / "state.sqlite").exists():
            snap = _snapshot(tmp)
            if snap.round_index >= at_least:
                return snap
        time.sleep(0.05)
    raise AssertionError(f"validator did not reach round {at_least}")


def test_sigkill_mid_round_keeps_committed_scores(tmp_path):
    faults = {"honest": None, "stall": "stall", "debug": "debug-quote"}
    env = dict(os.environ, CHUTES_SUBNET_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    with vf.local_subnet(tmp_path, faults, block_time=0.1) as subnet:
        honest = subnet.by_name("honest").uid
        proc = subprocess.Popen(_cmd(subnet, tmp_path), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            _wait_round(tmp_path, 2, proc, time.monotonic() + 60)
            committed = _wait_round(tmp_path, 3, proc, time.monotonic() + 30)
            # a round lasts >= TIMEOUT (the stalling miner): half of it later we are mid-round
            time.sleep(TIMEOUT / 2)
            before_kill = _snapshot(tmp_path)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        after = _snapshot(tmp_path)  # opens with an integrity check
        assert after == before_kill
        assert after.round_index >= committed.round_index >= 3
        assert after.scores[honest].ema > 0
        assert after.weights == {honest: 1.0}
        assert after.results[subnet.by_name("debug").uid]["reason"] == "attestation:debug_td"

        # restart: one more round continues from the committed EMA
        done = subprocess.run(_cmd(subnet, tmp_path, "--neuron.rounds", "1"), env=env,
                              capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        final = _snapshot(tmp_path)
        assert final.round_index == after.round_index + 1
        old = after.scores[honest].ema
        assert final.scores[honest].ema == pytest.approx(0.3 * 1.0 + 0.7 * old)
        assert final.scores[subnet.by_name("stall").uid].ema == 0.0
