"""The README's main command, end to end: real miner processes, validator rounds, gateway, client."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_end_to_end(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "chutes_subnet.cli", "demo", "--rounds", "1", "--summary-json", str(summary_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["ok"] is True
    weights = summary["weights"]
    assert weights["honest-a"] > 0 and weights["honest-b"] > 0
    assert abs(weights["honest-a"] + weights["honest-b"] - 1.0) < 1e-3
    assert weights["debug-td"] == weights["borrowed-key"] == weights["wrong-tokens"] == 0
    assert summary["reasons"]["debug-td"] == "attestation:debug_td"
    assert summary["reasons"]["borrowed-key"] == "attestation:binding_mismatch"
    assert summary["reasons"]["wrong-tokens"] == "wrong_output"
    assert summary["answer_matches_reference"] and summary["stream_matches"]
    assert summary["gateway_saw_plaintext"] is False and summary["gateway_requests"] == 2
    # The banner is loud about the simulated TEE, and the question never reaches the gateway's view.
    assert "SIMULATED TEE" in proc.stdout
    assert "Summary" in proc.stdout and "result: OK" in proc.stdout
