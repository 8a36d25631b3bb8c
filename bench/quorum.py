"""Quorum-mode verification cost: what ``verify="quorum"`` spends on the client's CPU
to accept a key (parse the gateway's statements + check a stake-weighted quorum:
one sr25519 verification per counted statement), against the cold ``verify="full"``
check of real TDX + 8 H100 evidence measured in the same run (``bench/client.py``'s
vector phase, collateral cached).

    python bench/quorum.py [--quick]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _full_baseline(runs: int) -> float:
    spec = importlib.util.spec_from_file_location("bench_client", ROOT / "bench" / "client.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return float(mod.vector_phase(runs)["cold_cpu_ms_collateral_cached"])


def _quorum_ms(n: int, runs: int) -> float:
    from bittensor.sp_core import Keypair

    from chutes_subnet.attestation.verify.signed_statements import (
        QuorumRule,
        Statement,
        check_quorum,
        key_sha256,
        parse_statements,
        sign_statement,
        statements_to_json,
    )
    from chutes_subnet.chain import Metagraph, Neuron
    from chutes_subnet.wire.protocol import chute_id_for_model

    key, receipt, block = b"\x01" * 1184, b"\x02" * 32, 5000
    kps = [Keypair.create_from_seed(i.to_bytes(32, "big")) for i in range(1, n + 1)]
    mg = Metagraph(7, block, tuple(Neuron(i, kp.ss58_address, kp.ss58_address, True, 1.0, None)
                                   for i, kp in enumerate(kps)))
    signed = [sign_statement(Statement(
        netuid=7, validator=kp.ss58_address, instance_id="ab" * 16,
        chute_id=chute_id_for_model("bench/q"), e2e_key_sha256=key_sha256(key),
        receipt_key_sha256=key_sha256(receipt), quote_sha256="c" * 64,
        policy_sha256="d" * 64, block=block - 1, expires_block=block + 100), kp) for kp in kps]
    raw = json.dumps(statements_to_json(signed)).encode()
    rule = QuorumRule(min_validators=n, min_stake_fraction=1.0)
    samples = []
    for _ in range(runs):
        c0 = time.process_time()
        v = check_quorum(parse_statements(raw), instance_id="ab" * 16, e2e_pubkey=key,
                         receipt_pubkey=receipt, metagraph=mg, rule=rule, now_block=block,
                         chute_id=chute_id_for_model("bench/q"))
        samples.append((time.process_time() - c0) * 1000)
        if not v.ok:
            raise SystemExit(f"unexpected quorum verdict: {v.reasons}")
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs")
    args = ap.parse_args()
    runs = 10 if args.quick else 50
    full = _full_baseline(runs)
    sizes = (3, 16, 64)
    quorum = {n: _quorum_ms(n, runs) for n in sizes}
    print(f"client key acceptance CPU ({'quick' if args.quick else 'full'}: {runs} runs, median)")
    print(f"  {'verify=full, real TDX + 8 H100 (collateral cached)':<52} {full:8.2f} ms  1.00x")
    for n in sizes:
        print(f"  {f'verify=quorum, {n} statements counted':<52} {quorum[n]:8.2f} ms  "
              f"{quorum[n] / full:.3f}x")
    print(json.dumps({"bench": "quorum", "runs": runs, "full_cold_cpu_ms": round(full, 3),
                      **{f"quorum_{n}_cpu_ms": round(quorum[n], 3) for n in sizes},
                      **{f"quorum_{n}_vs_full": round(quorum[n] / full, 4) for n in sizes}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
