"""Validator round benchmark: one full round over N simulated miner instances on loopback.

The miners are a *farm* (``bench/miner_farm.py``): ``--farm-procs`` processes serving
one instance per loopback port, each with its own ML-KEM key, receipt key, hotkey and
simulated machine (PCK + 8 GPUs), answering ``/attest`` with fresh SIMULATED evidence
and ``/e2e/invoke`` with a real v2 E2EE stream of the embedded model's real answer and
a signed receipt. The farm is a test double for hardware: keys and machines are built
before the round (as a fleet boots before it serves), not inside it. The validator is
the real :class:`Validator` in this process: a fresh nonce per instance, full
verification of every quote, PCK chain, GPU chain and binding (dev mode), real v2
sealing/opening and receipt checks, local recomputation of ``--verify`` answers per
instance, scoring, a LocalChain weight submission, the SQLite state commit and the
publication of every passing instance to a SQLite instance registry (``--registry``).

Reported per round size (``--sizes``, default 256, 1,024 and 4,096 instances): the
round's wall time, the validator's CPU (its process plus its ``--workers`` worker
processes, see ``chutes_subnet/validator/workers.py``) in total and per instance, the
farm's CPU separately, and the load average (the farm and any other job share the
cores). The baseline, measured in the same run in this process, is the *floor*: the
CPU per instance of the work no round can avoid (verifying one new machine's evidence
for a fresh nonce, and recomputing ``--verify`` embedded answers); "vs floor" is the
round's CPU per instance over it. ``--rounds 2`` adds a steady-state round on the same
validator (verified keys reused until their TTL, some re-challenged). Also a projection of a 256-miner round at the
default settings against one tempo (360 blocks = 72 min).

``--model tiny-llama`` makes the farm a real (tiny, offline-built Llama) chute: its
miners stream the model's greedy answers, and the validator counts every answer's
tokens with the chute's tokenizer and logprob-verifies ``--verify`` answers per miner
against its own reference (the floor then holds attestation verification only).

    python bench/validator.py [--quick] [--sizes 256,1024,4096] [--workers 2] [--rounds 2]
    python bench/validator.py --miners 4096          # one size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from miner_farm import Farm, process_cpu_seconds  # noqa: E402  (bench/ is the script's dir)

TEMPO_SECONDS = 360 * 12
FLOOR_SAMPLES = 32


def _raise_fd_limit() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _bench_config(args: argparse.Namespace) -> Any:
    from chutes_subnet.validator import BenchmarkConfig

    return BenchmarkConfig(prompts_per_miner=args.prompts, max_tokens=args.max_tokens,
                           verify_sample=args.verify)


def _floor(args: argparse.Namespace, samples: int = FLOOR_SAMPLES) -> dict[str, float]:
    """CPU ms per instance of the unavoidable work, in this process (see module doc)."""
    import torch

    from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
    from chutes_subnet.attestation.verify.policy import Policy
    from chutes_subnet.attestation.verify.verifier import Verifier
    from chutes_subnet.e2ee import KeyPair
    from chutes_subnet.inference import DEFAULT_MODEL_ID, run_generation
    from chutes_subnet.receipts import ReceiptSigner
    from chutes_subnet.validator.prompts import miner_prompts, new_round_seed
    from chutes_subnet.wire.protocol import chute_id_for_model

    torch.set_num_threads(1)  # as the validator's workers (one thread: bit-exact, fastest)
    logging.getLogger("chutes_subnet.attestation.simulator").setLevel(logging.ERROR)
    verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
    chute = chute_id_for_model(DEFAULT_MODEL_ID)
    hotkey = "5BenchFloorHotkey"
    cases = []
    for _ in range(samples + 1):  # one new machine each; the first warms the shared roots
        key, signer, nonce = KeyPair.generate(), ReceiptSigner.generate(), os.urandom(32)
        evidence = SimulatedProvider().collect(nonce, key.public_bytes, hotkey,
                                               signer.public_bytes)
        cases.append((evidence, nonce, key.public_bytes, signer.public_bytes))
    timed = 0.0
    for i, (evidence, nonce, pub, receipt) in enumerate(cases):
        t0 = time.process_time()
        verdict = verifier.verify(evidence, nonce=nonce, e2e_pubkey=pub, hotkey_ss58=hotkey,
                                  chute_id=chute, receipt_pubkey=receipt)
        if i:
            timed += time.process_time() - t0
        if not verdict.ok:
            raise RuntimeError(f"floor: evidence refused ({verdict.reasons[0].code})")
    verify_ms = 1000 * timed / samples
    recompute_ms = 0.0
    if not args.model_dir:
        bench, seed = _bench_config(args), new_round_seed()
        prompts = [p for uid in range(samples + 1)
                   for p in miner_prompts(seed, uid, hotkey, bench, embedded=True) if p.verify]
        run_generation(prompts[0].path, prompts[0].body, seed=bench.embedded_seed)  # model
        t0 = time.process_time()
        for p in prompts[1:]:
            run_generation(p.path, p.body, seed=bench.embedded_seed)
        recompute_ms = 1000 * (time.process_time() - t0) / samples
    return {"verify_ms": verify_ms, "recompute_ms": recompute_ms,
            "floor_ms": verify_ms + recompute_ms}


async def _rounds(args: argparse.Namespace, farm: Farm, tmp: Path) -> list[dict[str, Any]]:
    """``args.rounds`` consecutive rounds of one validator over ``farm``."""
    from chutes_subnet.attestation.verify.policy import Policy
    from chutes_subnet.attestation.verify.verifier import Verifier
    from chutes_subnet.chain import LocalChain
    from chutes_subnet.validator import Validator, ValidatorConfig, ValidatorState
    from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58

    wallet = ensure_dev_wallet("bench-validator", "default", str(tmp / "wallets"))
    chain = LocalChain(":memory:", netuid=1, block_time=0, weights_rate_limit=0,
                       max_uids=len(farm.ports) + 1)
    chain.register(hotkey_ss58(wallet), coldkey_ss58(wallet), stake=1e4, validator_permit=True)
    for i, (port, hk) in enumerate(farm.ports.items()):
        chain.register(hk, f"bench-coldkey-{i:05d}")
        await chain.serve_axon(hk, "127.0.0.1", port)
    config = ValidatorConfig(concurrency=args.concurrency, timeout=60.0,
                             dangerous_accept_simulated_tee=True, benchmark=_bench_config(args))
    verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
    references = None
    if args.model_dir:
        from chutes_subnet.validator.reference import (
            ChuteReference,
            ReferenceBook,
            ReferenceModel,
        )

        model = ReferenceModel(args.model_dir, torch_threads=1)
        references = ReferenceBook({args.model_name: ChuteReference(model)})
    pool, pids = None, []
    if args.workers:
        import functools

        from chutes_subnet.validator.workers import WorkerPool

        pool = WorkerPool(args.workers, functools.partial(
            Verifier, Policy.development(), dangerous_accept_simulated_tee=True))
        pool.warm_up()  # worker start-up (imports) is not round work
        pids = list(pool._exec._processes)  # bench-only CPU accounting of the workers
    registry = None
    if args.registry == "sqlite":  # what the validator command publishes to by default
        from chutes_subnet.registry import open_registry

        registry = open_registry(f"sqlite://{tmp / 'registry.db'}")
    validator = Validator(config, chain=chain, wallet=wallet, verifier=verifier,
                          state=ValidatorState(tmp / "state.sqlite"), references=references,
                          pool=pool, registry=registry)
    publish = validator._publish  # bench-only: time the registry step of each round
    spent = [0.0]

    def timed_publish(*a: Any, **kw: Any) -> None:
        t0 = time.perf_counter()
        publish(*a, **kw)
        spent[0] += time.perf_counter() - t0

    validator._publish = timed_publish  # type: ignore[method-assign]
    runs = []
    try:
        for index in range(1, args.rounds + 1):
            spent[0] = 0.0
            runs.append(await _measured_round(validator, farm, pids, index))
            runs[-1]["publish_s"] = spent[0]
    finally:
        await validator.aclose()
        if pool is not None:
            pool.close()
        chain.close()
    return runs


async def _measured_round(validator: Any, farm: Farm, pids: list[int],
                          index: int) -> dict[str, Any]:
    """One ``run_round`` with the validator's and the farm's CPU measured separately."""
    load0 = os.getloadavg()[0]
    cpu0, wall0, wcpu0 = time.process_time(), time.perf_counter(), process_cpu_seconds(pids)
    fcpu0 = farm.cpu_seconds()
    report = await validator.run_round()
    wall = time.perf_counter() - wall0
    main_cpu = time.process_time() - cpu0
    cpu = main_cpu + process_cpu_seconds(pids) - wcpu0
    farm_cpu = farm.cpu_seconds() - fcpu0
    load1 = os.getloadavg()[0]
    n = len(report.results)
    durations = sorted(r.duration_s for r in report.results)
    return {
        "instances": n, "round": index, "passed": sum(1 for r in report.results if r.ok),
        "challenged": sum(1 for r in report.results if not r.attestation_cached),
        "failures": sorted({f"{r.reason}: {r.detail_text}" for r in report.results if r.reason}),
        "wall_s": wall, "validator_cpu_s": cpu, "cpu_per_instance_ms": 1000 * cpu / n,
        "validator_main_cpu_s": main_cpu,
        "farm_cpu_s": farm_cpu, "farm_cpu_per_instance_ms": 1000 * farm_cpu / n,
        # what the round's CPU would take on these cores with nothing else running
        "cpu_bound_wall_s": (cpu + farm_cpu) / (os.cpu_count() or 1),
        "farm_startup_s": farm.startup_s, "loadavg_start": load0, "loadavg_end": load1,
        "instance_eval_p50_s": durations[n // 2], "instance_eval_max_s": durations[-1],
        "weights_set": bool(report.weights_result and report.weights_result.success),
        "weighted_uids": len(report.weights),
        "answers_verified": sum(r.verified for r in report.results),
    }


def _projection(cpu_per_instance_s: float, instances: int = 256) -> dict[str, float]:
    """Round time at the defaults: max(network-bound waves, validator CPU)."""
    from chutes_subnet.validator import BenchmarkConfig, ValidatorConfig

    d, b = ValidatorConfig(), BenchmarkConfig()
    waves = -(-instances // d.concurrency)
    # a typical GPU LLM stream: 0.5 s TTFT, 40 tok/s per stream (slow end), attest 0.5 s
    typical = 0.5 + b.prompts_per_miner * (0.5 + b.max_tokens / 40)
    # worst case: every miner stalls its first invoke until the timeout
    worst = 0.5 + d.timeout
    cpu = cpu_per_instance_s * instances * (b.prompts_per_miner / 2) * (b.max_tokens / 16)
    return {"typical_s": max(waves * typical, cpu), "worst_s": max(waves * worst, cpu),
            "cpu_s": cpu}


def _run_size(args: argparse.Namespace, n: int) -> list[dict[str, Any]]:
    """One farm of ``n`` instances and ``args.rounds`` validator rounds over it."""
    hotkeys = [f"5BenchMinerHotkey{i:05d}" for i in range(n)]
    with Farm(hotkeys, procs=args.farm_procs, model_dir=args.model_dir,
              model_name=args.model_name) as farm, tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CHUTES_SUBNET_HOME", tmp)
        return asyncio.run(_rounds(args, farm, Path(tmp)))


def _print_table(args: argparse.Namespace, floor: dict[str, float],
                 runs: list[dict[str, Any]]) -> None:
    from chutes_subnet.validator import ValidatorConfig

    print(f"validator rounds over simulated instances (model {args.model}, concurrency "
          f"{args.concurrency}, {args.workers} workers, {args.prompts} prompts x "
          f"{args.max_tokens} tokens, {args.verify} verified per instance; farm in "
          f"{args.farm_procs} processes on the same {os.cpu_count()} cores)")
    print(f"  floor (same run, one process): {floor['floor_ms']:.1f} ms CPU per instance = "
          f"verify one new machine's evidence {floor['verify_ms']:.1f} ms + recompute "
          f"{args.verify} answer(s) {floor['recompute_ms']:.1f} ms")
    print(f"  {'instances':>9} {'round':>5} {'passed':>7} {'challenged':>10} {'wall':>8} "
          f"{'CPU-bound':>9} {'valid. CPU':>10} {'CPU/inst':>9} {'vs floor':>8} "
          f"{'publish':>7} {'farm CPU':>9} {'farm/inst':>9} {'farm start':>10} {'load':>9}  "
          f"failures")
    for r in runs:
        ratio = r["cpu_per_instance_ms"] / floor["floor_ms"]
        print(f"  {r['instances']:>9} {r['round']:>5} {r['passed']:>7} {r['challenged']:>10} "
              f"{r['wall_s']:>7.1f}s {r['cpu_bound_wall_s']:>8.1f}s "
              f"{r['validator_cpu_s']:>9.1f}s {r['cpu_per_instance_ms']:>7.1f}ms "
              f"{ratio:>7.2f}x {r['publish_s']:>6.1f}s {r['farm_cpu_s']:>8.1f}s "
              f"{r['farm_cpu_per_instance_ms']:>7.1f}ms "
              f"{r['farm_startup_s']:>9.1f}s {r['loadavg_start']:>4.1f}-{r['loadavg_end']:<4.1f} "
              f" {'; '.join(r['failures']) or '-'}")
    d = ValidatorConfig()
    print(f"  wall: the round as measured; CPU-bound: (validator + farm CPU) / cores, the wall "
          f"with the cores to itself; publish: the round's instance-registry step "
          f"({args.registry}); round 1 challenges every instance, later rounds reuse "
          f"verified keys (re-challenge probability {d.rechallenge_probability:g}, TTL "
          f"{d.attestation_ttl / 60:g} min)")
    last = max((r for r in runs if r["round"] == 1), key=lambda r: r["instances"])
    print(f"  largest round: {last['instances']} instances in {last['wall_s'] / 60:.1f} min "
          f"(goal: 4,096 within 10 min on 2 cores)")
    proj = _projection(last["cpu_per_instance_ms"] / 1000)
    print(f"  projected 256-miner round at the defaults: typical "
          f"{proj['typical_s'] / 60:.1f} min, all stall {proj['worst_s'] / 60:.1f} min; "
          f"one tempo {TEMPO_SECONDS / 60:.0f} min")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 64 and 256")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated round sizes (default 256,1024,4096)")
    parser.add_argument("--miners", type=int, default=None, help="one size only")
    parser.add_argument("--workers", type=int, default=2,
                        help="validator worker processes (0 = threads in one process)")
    parser.add_argument("--farm-procs", dest="farm_procs", type=int, default=2,
                        help="processes serving the simulated instances")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="instances evaluated at once (--neuron.concurrency)")
    parser.add_argument("--registry", choices=("sqlite", "none"), default="sqlite",
                        help="instance registry the validator publishes to (its default: "
                             "SQLite)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="consecutive rounds per size (round 2 on: cached keys, steady state)")
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, default=16)
    parser.add_argument("--verify", type=int, default=1)
    parser.add_argument("--floor-samples", dest="floor_samples", type=int,
                        default=FLOOR_SAMPLES, help="instances the floor is measured over")
    parser.add_argument("--model", choices=("embedded", "tiny-llama"), default="embedded",
                        help="tiny-llama: a real (tiny, offline-built) Llama chute verified by "
                             "token counting and logprobs against the validator's reference")
    args = parser.parse_args()
    _raise_fd_limit()
    if args.miners:
        sizes = [args.miners]
    elif args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    else:
        sizes = [64, 256] if args.quick else [256, 1024, 4096]
    models = tempfile.TemporaryDirectory()
    args.model_dir = args.model_name = None
    if args.model == "tiny-llama":
        from tests.real_engine import MODEL_NAME, build_model

        args.model_dir, args.model_name = str(build_model(Path(models.name) / "m")), MODEL_NAME
    runs: list[dict[str, Any]] = []
    try:
        floor = _floor(args, args.floor_samples)
        for n in sizes:
            for r in _run_size(args, n):
                runs.append(r)
                print(f"done: {n} instances, round {r['round']}: wall {r['wall_s']:.1f} s, "
                      f"validator CPU {r['validator_cpu_s']:.1f} s "
                      f"({r['cpu_per_instance_ms']:.1f} ms per instance), farm CPU "
                      f"{r['farm_cpu_s']:.1f} s, passed {r['passed']}, load "
                      f"{r['loadavg_start']:.1f}", file=sys.stderr, flush=True)
    finally:
        models.cleanup()
    _print_table(args, floor, runs)
    first = [r for r in runs if r["round"] == 1]
    later = [r for r in runs if r["round"] == args.rounds and args.rounds > 1]
    last = first[-1]
    proj = _projection(last["cpu_per_instance_ms"] / 1000)
    out = {"runs": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in runs],
           "floor_ms": round(floor["floor_ms"], 2), "floor_verify_ms": round(floor["verify_ms"], 2),
           "floor_recompute_ms": round(floor["recompute_ms"], 2),
           "cpu_per_instance_ms": {str(r["instances"]): round(r["cpu_per_instance_ms"], 2)
                                   for r in first},
           "vs_floor": {str(r["instances"]): round(r["cpu_per_instance_ms"] / floor["floor_ms"], 2)
                        for r in first},
           "round_wall_s": {str(r["instances"]): round(r["wall_s"], 1) for r in first},
           "cpu_bound_wall_s": {str(r["instances"]): round(r["cpu_bound_wall_s"], 1)
                                for r in first},
           "steady_cpu_per_instance_ms": {str(r["instances"]): round(r["cpu_per_instance_ms"], 2)
                                          for r in later},
           "rounds": args.rounds,
           "all_passed": all(r["passed"] == r["instances"] for r in runs),
           "projected_256_typical_s": round(proj["typical_s"], 1),
           "projected_256_worst_s": round(proj["worst_s"], 1), "tempo_s": TEMPO_SECONDS,
           "concurrency": args.concurrency, "workers": args.workers,
           "farm_procs": args.farm_procs, "model": args.model, "cores": os.cpu_count()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
