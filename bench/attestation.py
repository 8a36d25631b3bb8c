"""Benchmark: median time to verify one TDX quote (DCAP + strict parse + policy +
binding) and one NVIDIA GPU evidence entry, on the stored real vectors.

    python bench/attestation.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: tests.vector_files

from chutes_subnet.attestation import (
    Evidence,
    MeasurementProfile,
    Policy,
    StaticCollateralSource,
    Verifier,
    collateral_from_json,
    parse_quote,
)
from chutes_subnet.attestation.gpu import nvidia_root_der, parse_gpu_entry, verify_gpu_entry
from tests.vector_files import VECTORS_DIR as VECTORS


def _median_ms(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    runs = 50 if ap.parse_args().quick else 500
    quote = (VECTORS / "tdx" / "tdx_v4_quote.bin").read_bytes()
    collateral = collateral_from_json((VECTORS / "tdx" / "tdx_v4_quote.collateral.json").read_text())
    gpus = json.loads((VECTORS / "gpu" / "h100x8_evidence.json").read_text())
    nonce = bytes.fromhex(gpus[0]["nonce"])
    policy = Policy.default().with_profiles(
        MeasurementProfile("vector", parse_quote(quote).report.measurements))
    verifier = Verifier(policy, StaticCollateralSource(collateral))
    evidence = Evidence(quote, [])

    def one_quote() -> None:
        v = verifier.verify(evidence, nonce=nonce, e2e_pubkey=b"k", hotkey_ss58="5x", now=1751624191)
        assert v.reason_codes == ("binding_mismatch",)

    root = nvidia_root_der()

    def one_gpu() -> None:
        verify_gpu_entry(parse_gpu_entry(gpus[0]), nonce, root_der=root, now=1751624191)

    one_quote(), one_gpu()
    q_ms, g_ms = _median_ms(one_quote, runs), _median_ms(one_gpu, runs)
    print(f"{'check':<34}{'median ms':>10}{'target ms':>11}{'runs':>7}")
    print(f"{'TDX quote (DCAP+policy+binding)':<34}{q_ms:>10.3f}{5:>11}{runs:>7}")
    print(f"{'GPU evidence entry (H100)':<34}{g_ms:>10.3f}{30:>11}{runs:>7}")
    print(json.dumps({"bench": "attestation", "runs": runs, "tdx_quote_median_ms": round(q_ms, 3),
                      "gpu_entry_median_ms": round(g_ms, 3), "tdx_target_ms": 5, "gpu_target_ms": 30}))


if __name__ == "__main__":
    main()
