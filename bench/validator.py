"""Validator round benchmark: one full round over N simulated miners on loopback.

Two processes: a *miner farm* (one uvicorn server listening on N loopback ports; each
port is a light miner with its own ML-KEM key and hotkey binding, answering
``/attest`` with SIMULATED evidence and ``/e2e/invoke`` with a real v2 E2EE stream of
the embedded model's real answer) and the real :class:`Validator` in this process,
with real attestation verification (dev mode), real v2 sealing/opening, local
recomputation of sampled answers, scoring, a LocalChain weight submission and the
SQLite state commit.

Reported per round size (``--sizes``, default 256, 1,024 and 4,096 instances): round
wall time and the validator's CPU per instance — its own process plus its worker
processes (``--workers``, attestation verification and reference recomputation, see
``chutes_subnet/validator/workers.py``) — what limits how many instances one
validator can take. The baseline, measured in the same run at the smallest size, is
the validator without workers (threads in one process). The farm runs on the same
cores, so wall times are an upper bound for a validator with the machine to itself.
Also a projection of a 256-miner round at the default settings (16 miners at once,
4 prompts x 64 tokens, 30 s timeout) against one tempo (360 blocks = 72 min).

``--model tiny-llama`` makes the farm a real (tiny, offline-built Llama) chute: its
miners stream the model's greedy answers, and the validator counts every answer's
tokens with the chute's tokenizer and logprob-verifies ``--verify`` answers per miner
against its own reference (the validator CPU per miner then includes verification).

    python bench/validator.py [--quick] [--sizes 256,1024,4096] [--workers 2] [--model tiny-llama]
    python bench/validator.py --miners 256 --workers 0     # one size, no workers
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEMPO_SECONDS = 360 * 12


# --- the miner farm (child process) -------------------------------------------------------

def _farm(spec: dict[str, Any]) -> None:
    import torch
    import uvicorn

    from chutes_subnet.asgi import invoke_headers, read_body
    from chutes_subnet.attestation import SimulatedProvider
    from chutes_subnet.e2ee import KeyPair, v2
    from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED, run_generation
    from chutes_subnet.receipts import ReceiptSigner
    from chutes_subnet.receipts import event as receipt_event
    from chutes_subnet.sse import DONE_EVENT, format_event
    from chutes_subnet.wire.messages import AttestResponse
    from chutes_subnet.wire.protocol import chute_id_for_model

    torch.set_num_threads(1)
    model_name = spec.get("model_name") or DEFAULT_MODEL_ID
    chute = chute_id_for_model(model_name)
    generate = _real_generator(spec["model_dir"]) if spec.get("model_dir") else None
    # one simulated machine per miner (its own PCK and GPUs): hardware shared by several
    # uids earns for none of them, and a real fleet's GPUs are distinct
    providers: dict[int, SimulatedProvider] = {}
    socks, miners = [], {}
    for hotkey in spec["hotkeys"]:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        socks.append(s)
        key = KeyPair.generate()
        miners[s.getsockname()[1]] = (hotkey, key, key.instance_id, ReceiptSigner.generate())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive, 1 << 20)
        hotkey, key, instance, signer = miners[scope["server"][1]]
        if scope["path"] == "/attest":
            nonce = bytes.fromhex(json.loads(body)["nonce"])
            port = scope["server"][1]
            if port not in providers:
                providers[port] = SimulatedProvider()
            ev = await asyncio.to_thread(providers[port].collect, nonce, key.public_bytes, hotkey,
                                         signer.public_bytes)
            answer = AttestResponse(instance_id=instance, chute_id=chute, model=model_name,
                                    hotkey=hotkey, e2e_pubkey=key.public_b64,
                                    receipt_pubkey=signer.public_b64, **ev.to_wire())
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": answer.model_dump_json().encode()})
            return
        h = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = h["x-e2e-path"]
        ctx = invoke_headers(h).context()
        payload, session = v2.open_request(key, ctx, body)
        if generate is not None:
            result = await asyncio.to_thread(generate, path, payload)
        else:
            result = await asyncio.to_thread(run_generation, path, payload, seed=DEFAULT_SEED)
        sealer = session.stream_sealer()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        kind = "chat.completion.chunk" if path == "/v1/chat/completions" else "text_completion"
        answer = hashlib.sha256()  # every byte before the receipt event
        for ch in result.text:
            choice = {"index": 0, "delta": {"content": ch}} if kind != "text_completion" \
                else {"index": 0, "text": ch}
            line = "data: " + json.dumps({"object": kind, "choices": [choice]})
            frame = format_event({"e2e": sealer.seal(line.encode())})
            answer.update(frame)
            await send({"type": "http.response.body", "more_body": True, "body": frame})
        usage = {"prompt_tokens": result.prompt_tokens,
                 "completion_tokens": result.completion_tokens}
        tail = format_event({"e2e_final": sealer.finish(usage)})
        answer.update(tail)
        receipt = signer.sign(request_binding=session.request_binding,
                              answer_sha256=answer.digest(),
                              prompt_tokens=result.prompt_tokens,
                              completion_tokens=result.completion_tokens, instance_id=instance,
                              issued_at_ms=int(time.time() * 1000))
        await send({"type": "http.response.body",
                    "body": tail + receipt_event(receipt) + DONE_EVENT})

    server = uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False,
                                           lifespan="off", backlog=2048))
    print("PORTS " + json.dumps({port: m[0] for port, m in miners.items()}), flush=True)
    server.run(sockets=socks)


def _real_generator(model_dir: str) -> Any:
    """Greedy answers of the tiny Llama (what an engine serving it streams)."""
    import threading
    from types import SimpleNamespace

    import torch

    from chutes_subnet.validator.reference import ReferenceModel

    model = ReferenceModel(model_dir, torch_threads=1)
    lock = threading.Lock()

    def generate(path: str, payload: dict[str, Any]) -> Any:
        ids = model.prompt_ids(path, payload)
        with lock, torch.inference_mode():
            out = model._lm().generate(torch.tensor([ids]), do_sample=False, pad_token_id=1,
                                       max_new_tokens=int(payload["max_tokens"]))
        new = out[0][len(ids):]
        return SimpleNamespace(text=model.tokenizer.decode(new, skip_special_tokens=True),
                               prompt_tokens=len(ids), completion_tokens=len(new))

    return generate


# --- the validator side ---------------------------------------------------------------------

def _raise_fd_limit() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _children_cpu(pids: list[int]) -> float:
    """utime + stime of live processes (Linux /proc), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


async def _round(args: argparse.Namespace, ports: list[int], hotkeys: list[str],
                 tmp: Path, workers: int = 0) -> dict[str, Any]:
    from chutes_subnet.attestation import Policy, Verifier
    from chutes_subnet.chain import LocalChain
    from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
    from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58

    wallet = ensure_dev_wallet("bench-validator", "default", str(tmp / "wallets"))
    chain = LocalChain(":memory:", netuid=1, block_time=0, weights_rate_limit=0,
                       max_uids=len(ports) + 1)
    chain.register(hotkey_ss58(wallet), coldkey_ss58(wallet), stake=1e4, validator_permit=True)
    for i, (port, hk) in enumerate(zip(ports, hotkeys, strict=True)):
        chain.register(hk, f"bench-coldkey-{i:04d}")
        await chain.serve_axon(hk, "127.0.0.1", port)
    bench = BenchmarkConfig(prompts_per_miner=args.prompts, max_tokens=args.max_tokens,
                            verify_sample=args.verify)
    config = ValidatorConfig(concurrency=args.concurrency, timeout=60.0,
                             dangerous_accept_simulated_tee=True, benchmark=bench)
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
    if workers:
        import functools

        from chutes_subnet.validator.workers import WorkerPool

        pool = WorkerPool(workers, functools.partial(
            Verifier, Policy.development(), dangerous_accept_simulated_tee=True))
        pool.warm_up()  # worker start-up (imports) is not round work
        pids = list(pool._exec._processes)  # bench-only CPU accounting of the workers
    validator = Validator(config, chain=chain, wallet=wallet, verifier=verifier,
                          state=ValidatorState(tmp / "state.sqlite"), references=references,
                          pool=pool)
    cpu0, wall0, wcpu0 = time.process_time(), time.perf_counter(), _children_cpu(pids)
    report = await validator.run_round()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0 + _children_cpu(pids) - wcpu0
    await validator.aclose()
    if pool is not None:
        pool.close()
    chain.close()
    passed = [r for r in report.results if r.ok]
    durations = sorted(r.duration_s for r in report.results)
    return {
        "miners": len(report.results), "passed": len(passed),
        "failures": sorted({f"{r.reason}: {r.detail_text}" for r in report.results if r.reason}),
        "workers": workers,
        "wall_s": wall, "validator_cpu_s": cpu, "cpu_per_miner_ms": 1000 * cpu / len(ports),
        "miner_eval_p50_s": durations[len(durations) // 2],
        "miner_eval_max_s": durations[-1],
        "weights_set": bool(report.weights_result and report.weights_result.success),
        "weighted_uids": len(report.weights),
        "tokens_verified": sum(r.verified for r in report.results) * args.max_tokens,
    }


def _projection(cpu_per_miner_s: float, miners: int = 256) -> dict[str, float]:
    """Round time at the defaults: max(network-bound waves, validator CPU)."""
    from chutes_subnet.validator import BenchmarkConfig, ValidatorConfig

    d, b = ValidatorConfig(), BenchmarkConfig()
    waves = -(-miners // d.concurrency)
    # a typical GPU LLM stream: 0.5 s TTFT, 40 tok/s per stream (slow end), attest 0.5 s
    typical = 0.5 + b.prompts_per_miner * (0.5 + b.max_tokens / 40)
    # worst case: every miner stalls its first invoke until the timeout
    worst = 0.5 + d.timeout
    cpu = cpu_per_miner_s * miners * (b.prompts_per_miner / 2) * (b.max_tokens / 16)
    return {"typical_s": max(waves * typical, cpu), "worst_s": max(waves * worst, cpu),
            "cpu_s": cpu}


def _run_size(args: argparse.Namespace, n: int, workers: int) -> dict[str, Any]:
    """One farm of ``n`` miners and one validator round over it."""
    hotkeys = [f"5BenchMinerHotkey{i:05d}" for i in range(n)]
    farm = subprocess.Popen([sys.executable, __file__, "--farm"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert farm.stdin is not None and farm.stdout is not None
        farm.stdin.write(json.dumps({"hotkeys": hotkeys, "model_dir": args.model_dir,
                                     "model_name": args.model_name}) + "\n")
        farm.stdin.flush()
        line = farm.stdout.readline()
        if not line.startswith("PORTS "):
            raise RuntimeError("miner farm did not start")
        mapping = json.loads(line[6:])
        ports = [int(p) for p in mapping]
        with tempfile.TemporaryDirectory() as tmp:
            os.environ.setdefault("CHUTES_SUBNET_HOME", tmp)
            return asyncio.run(_round(args, ports, list(mapping.values()), Path(tmp), workers))
    finally:
        farm.terminate()
        farm.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sizes 64 and 256, 2 prompts x 16 tokens")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated round sizes (default 256,1024,4096)")
    parser.add_argument("--miners", type=int, default=None, help="one size only")
    parser.add_argument("--workers", type=int, default=2,
                        help="validator worker processes (0 = threads, the baseline)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the no-workers baseline at the smallest size")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--max-tokens", dest="max_tokens", type=int, default=16)
    parser.add_argument("--verify", type=int, default=1)
    parser.add_argument("--model", choices=("embedded", "tiny-llama"), default="embedded",
                        help="tiny-llama: a real (tiny, offline-built) Llama chute verified by "
                             "token counting and logprobs against the validator's reference")
    parser.add_argument("--farm", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _raise_fd_limit()
    if args.farm:
        _farm(json.loads(sys.stdin.readline()))
        return 0
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
    plan = ([(sizes[0], 0)] if args.baseline and args.workers else []) + \
        [(n, args.workers) for n in sizes]
    try:
        for n, workers in plan:
            runs.append(_run_size(args, n, workers))
            r = runs[-1]
            print(f"done: {n} instances, {workers} workers: wall {r['wall_s']:.1f} s, "
                  f"CPU {r['validator_cpu_s']:.1f} s ({r['cpu_per_miner_ms']:.1f} ms per "
                  f"instance), passed {r['passed']}", file=sys.stderr, flush=True)
    finally:
        models.cleanup()
    base = runs[0]
    print(f"validator rounds over simulated miners (model {args.model}, concurrency "
          f"{args.concurrency}, {args.prompts} prompts x {args.max_tokens} tokens, "
          f"{args.verify} verified; farm and validator share the machine's "
          f"{os.cpu_count()} cores)")
    print(f"  {'instances':>9} {'workers':>7} {'passed':>7} {'wall':>8} {'CPU':>8} "
          f"{'CPU/inst':>9} {'vs base':>8}  failures")
    for r in runs:
        ratio = base["cpu_per_miner_ms"] / r["cpu_per_miner_ms"] if r["cpu_per_miner_ms"] else 0
        print(f"  {r['miners']:>9} {r['workers']:>7} {r['passed']:>7} {r['wall_s']:>7.1f}s "
              f"{r['validator_cpu_s']:>7.1f}s {r['cpu_per_miner_ms']:>7.1f}ms {ratio:>7.2f}x  "
              f"{', '.join(r['failures']) or '-'}")
    last = runs[-1]
    proj = _projection(last["cpu_per_miner_ms"] / 1000)
    print(f"  largest round: {last['miners']} instances in {last['wall_s'] / 60:.1f} min "
          f"(goal: 4,096 within 10 min on 2 cores)")
    print(f"  projected 256-miner round at the defaults: typical "
          f"{proj['typical_s'] / 60:.1f} min, all stall {proj['worst_s'] / 60:.1f} min; "
          f"one tempo {TEMPO_SECONDS / 60:.0f} min")
    out = {"runs": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in runs],
           "baseline_cpu_per_instance_ms": round(base["cpu_per_miner_ms"], 2),
           "cpu_per_instance_ms": {str(r["miners"]): round(r["cpu_per_miner_ms"], 2)
                                   for r in runs if r["workers"] == args.workers},
           "largest_round_wall_s": round(last["wall_s"], 1),
           "projected_256_typical_s": round(proj["typical_s"], 1),
           "projected_256_worst_s": round(proj["worst_s"], 1), "tempo_s": TEMPO_SECONDS,
           "concurrency": args.concurrency, "workers": args.workers, "model": args.model}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
