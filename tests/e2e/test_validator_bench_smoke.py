"""CI-sized run of ``bench/validator.py``: two consecutive validator rounds over a few simulated
instances served by the bench's miner farm (``bench/miner_farm.py``) in two processes.

The fleet-sized runs (256, 1,024 and 4,096 instances, figures in docs/validator.md)
take minutes; this keeps the farm and the validator's real verification of its
evidence, answers and receipts in step on every commit (every instance must pass:
a farm that drifts from the protocol fails them all).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = 6


def test_validator_bench_round_passes_every_instance():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "validator.py"), "--miners", str(INSTANCES),
         "--workers", "1", "--farm-procs", "2", "--concurrency", "4", "--floor-samples", "2",
         "--rounds", "2"],
        check=False, capture_output=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:] + proc.stderr.decode()[-3000:]
    lines = proc.stdout.decode().strip().splitlines()
    out = json.loads(lines[-1])  # the bench contract: one JSON line at the end
    assert any(line.strip().startswith("instances") for line in lines)  # the table
    run, steady = out["runs"]
    assert (run["round"], steady["round"]) == (1, 2)
    assert run["failures"] == [] and steady["failures"] == []
    assert run["instances"] == run["passed"] == INSTANCES and out["all_passed"] is True
    assert steady["passed"] == INSTANCES
    assert run["challenged"] == INSTANCES  # the first round challenges every instance
    assert str(INSTANCES) in out["steady_cpu_per_instance_ms"]
    # every instance attested, benchmarked and one answer each recomputed locally
    assert run["answers_verified"] == INSTANCES
    assert run["weights_set"] is True and run["weighted_uids"] == INSTANCES
    # both sides measured, and the floor of the same run is the ratio's base
    assert run["validator_cpu_s"] > 0 and run["farm_cpu_s"] > 0
    assert out["floor_verify_ms"] > 0 and out["floor_recompute_ms"] > 0
    ratio = run["cpu_per_instance_ms"] / out["floor_ms"]
    assert out["vs_floor"][str(INSTANCES)] == pytest.approx(ratio, abs=0.011)  # JSON rounds
    assert out["farm_procs"] == 2 and out["workers"] == 1
