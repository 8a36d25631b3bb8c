"""Benchmark: median time to verify one TDX quote (DCAP + strict parse + policy +
binding) and one NVIDIA GPU evidence entry, on the stored real vectors, and what the
workload step (RTMR3 event-log replay + manifest checks) adds to a quote verification.

    python bench/attestation.py [--quick]

Workload step, measured two ways in the same run:
* alone, on its success path (all eight checks): the real dstack TD's nine RTMR3 events
  plus one chutes workload event, a manifest, its publication lookup;
* inside the verifier: the real dstack quote verified with its real event log vs the
  same quote without one (the replay must reproduce the quote's RTMR3).
Target: <= 0.2 ms added per verification.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: tests.vector_files

from chutes_subnet.attestation.verify.collateral import StaticCollateralSource
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.eventlog import parse_event_log, replay, workload_event
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.gpu import nvidia_root_der, parse_gpu_entry, verify_gpu_entry
from chutes_subnet.attestation.verify.manifest import WorkloadManifest
from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.attestation.verify.workload_check import StaticManifestSource, check_workload
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
    policy = replace(Policy.default().with_profiles(
        MeasurementProfile("vector", parse_quote(quote).report.measurements)),
        workload_required=False)  # the public quote measures no workload
    verifier = Verifier(policy, StaticCollateralSource(collateral))
    evidence = Evidence(quote, [])

    def one_quote() -> None:
        v = verifier.verify(evidence, nonce=nonce, e2e_pubkey=b"k", hotkey_ss58="5x", now=1751624191)
        assert v.reason_codes == ("binding_mismatch",)

    one_workload, one_dstack_plain, one_dstack_log = _workload_cases()

    root = nvidia_root_der()

    def one_gpu() -> None:
        verify_gpu_entry(parse_gpu_entry(gpus[0]), nonce, root_der=root, now=1751624191)

    one_quote(), one_gpu(), one_workload(), one_dstack_plain(), one_dstack_log()
    q_ms, g_ms = _median_ms(one_quote, runs), _median_ms(one_gpu, runs)
    w_ms = _median_ms(one_workload, runs * 4)
    plain_ms, log_ms = _median_ms(one_dstack_plain, runs), _median_ms(one_dstack_log, runs)
    added_ms = max(log_ms - plain_ms, 0.0)
    print(f"{'check':<40}{'median ms':>10}{'target ms':>11}{'vs quote':>10}{'runs':>7}")
    print(f"{'TDX quote (DCAP+policy+binding)':<40}{q_ms:>10.3f}{5:>11}{1:>10.2f}{runs:>7}")
    print(f"{'GPU evidence entry (H100)':<40}{g_ms:>10.3f}{30:>11}{g_ms / q_ms:>10.2f}{runs:>7}")
    print(f"{'workload step alone (10 events, ok)':<40}{w_ms:>10.3f}{0.2:>11}"
          f"{w_ms / q_ms:>10.3f}{runs * 4:>7}")
    print(f"{'dstack quote, no event log':<40}{plain_ms:>10.3f}{'':>11}"
          f"{plain_ms / q_ms:>10.2f}{runs:>7}")
    print(f"{'dstack quote + real RTMR3 log':<40}{log_ms:>10.3f}{'':>11}"
          f"{log_ms / q_ms:>10.2f}{runs:>7}")
    print(f"{'  added by replay in the verifier':<40}{added_ms:>10.3f}{0.2:>11}"
          f"{added_ms / plain_ms:>10.3f}{'':>7}")
    print(json.dumps({"bench": "attestation", "runs": runs, "tdx_quote_median_ms": round(q_ms, 3),
                      "gpu_entry_median_ms": round(g_ms, 3), "tdx_target_ms": 5, "gpu_target_ms": 30,
                      "workload_step_median_ms": round(w_ms, 4),
                      "workload_vs_quote": round(w_ms / q_ms, 4),
                      "dstack_verify_ms": round(plain_ms, 3),
                      "dstack_verify_with_log_ms": round(log_ms, 3),
                      "replay_added_ms": round(added_ms, 4), "workload_target_ms": 0.2}))


def _workload_cases():
    """(workload step alone, dstack verify without log, dstack verify with its log)."""
    info = json.loads((VECTORS / "tdx-eventlog" / "tcb_info.json").read_text())
    dstack_quote = bytes(json.loads((VECTORS / "tdx-eventlog" / "quote.json").read_text()))
    dstack_collateral = collateral_from_json(
        (VECTORS / "tdx-eventlog" / "collateral.json").read_text())
    digest = "sha256:" + "ab" * 32
    manifest = WorkloadManifest(chute_id="bench", model_id="org/model", model_revision="r1",
                                weights_digest=digest, tokenizer_digest=digest, engine="vllm",
                                engine_version="0.8.5", image_digest=digest, dtype="bfloat16",
                                quantization="none", max_context=32768)
    events = [e for e in parse_event_log(info["event_log"]) if e.imr == 3]
    events.append(workload_event(manifest))
    log = [e.to_wire() for e in events]
    rtmr3, wire_manifest = replay(events), manifest.to_dict()
    source = StaticManifestSource([manifest])

    def workload() -> None:
        out = check_workload(log, wire_manifest, rtmr3, "bench", source)
        assert out.manifest is not None

    report = parse_quote(dstack_quote).report
    policy = Policy.default().with_profiles(MeasurementProfile("dstack", report.measurements))
    policy = replace(policy, td=policy.td.accepting(mrconfigid=report.mr_config_id))
    verifier = Verifier(policy, StaticCollateralSource(dstack_collateral))
    plain = Evidence(dstack_quote, [])
    with_log = Evidence(dstack_quote, [], event_log=info["event_log"], workload_manifest=wire_manifest)
    now = 1787894500

    def dstack_plain() -> None:
        # no log: the (empty) replay cannot reproduce RTMR3
        v = verifier.verify(plain, nonce=bytes(32), e2e_pubkey=b"k", hotkey_ss58="5x", now=now)
        assert v.reason_codes == ("event_log_replay_mismatch", "binding_mismatch"), v.reason_codes

    def dstack_log() -> None:
        # the log replays to the quote's RTMR3 (all 9 events hashed and chained); the
        # dstack TD measured no chutes workload, so the step ends there
        v = verifier.verify(with_log, nonce=bytes(32), e2e_pubkey=b"k", hotkey_ss58="5x", now=now)
        assert v.reason_codes == ("workload_event_missing", "binding_mismatch"), v.reason_codes

    return workload, dstack_plain, dstack_log


if __name__ == "__main__":
    main()
