"""Client verification benchmark: what "verify before you send" costs the client.

Two processes on loopback: this client, and a server process running the real gateway
and the real miner (embedded model, simulated TD with 8 simulated H100s, so the miner
produces real-layout evidence for every challenge). Measured in one run:

* warm: sequential non-stream chat calls (``max_tokens=1``), alternating between
  today's unverified client (``verify="gateway"``) and the default verifying client
  with its pin in place; median round trip and client CPU per call (overhead goals:
  <= 2 % of a round trip);
* cold: the first call of a fresh client (discovery + nonce pool, and for the
  verifying client the relayed challenge + verification), both clients;
* cold verification CPU on the real public vectors (Intel TDX v4 quote with DCAP
  collateral served as the gateway's cache serves it, 8 real H100 evidence entries):
  parse + collateral load + full check, ``time.process_time`` (goal <= 10 ms), for a
  machine never seen (GPU link cache cleared) and for one seen before.

Prints a table, then one JSON line.

    python bench/client.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "bench/verified"
SIM_GPUS = 8


def _serve() -> None:
    """Child: gateway + miner on free loopback ports; prints one JSON line, then serves."""
    import uvicorn

    from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
    from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
    from chutes_subnet.gateway.app import create_app
    from chutes_subnet.gateway.config import GatewayConfig
    from chutes_subnet.gateway.usage import MemoryUsageMeter
    from chutes_subnet.inference import make_backend
    from chutes_subnet.miner import MinerConfig
    from chutes_subnet.miner import create_app as miner_app
    from chutes_subnet.nonces import MemoryNonceStore
    from chutes_subnet.registry import MemoryInstanceRegistry
    from tests.miner_fixtures import miner_record
    from tests.servers import free_port

    mport, gport = free_port(), free_port()
    miner = miner_app(MinerConfig(tee="simulated", model_id=MODEL, invoke_auth="none"),
                      hotkey_ss58="5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
                      backend=make_backend("embedded", model_id=MODEL),
                      provider=SimulatedProvider(gpu_count=SIM_GPUS), gate=None)
    inst = miner.state.instance
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    secret, _ = keys.create("bench")
    registry.upsert(miner_record(inst, f"http://127.0.0.1:{mport}", ttl=86400))
    gw = create_app(GatewayConfig(nonces_per_instance=64, attest_rate=1000.0, attest_burst=1000),
                    registry=registry, nonce_store=MemoryNonceStore(), keys=keys,
                    usage=MemoryUsageMeter())

    async def main() -> None:
        servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                 log_level="error", access_log=False))
                   for app, port in ((miner, mport), (gw, gport))]
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        while not all(s.started for s in servers):  # noqa: ASYNC110 - uvicorn exposes a flag
            await asyncio.sleep(0.02)
        print(json.dumps({"gateway": f"http://127.0.0.1:{gport}", "key": secret}), flush=True)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _call(http: Any, url: str) -> tuple[float, float]:
    """(wall ms, client CPU ms) of one chat call."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    w0, c0 = time.perf_counter(), time.process_time()
    r = http.post(url + "/v1/chat/completions", json=body)
    w1, c1 = time.perf_counter(), time.process_time()
    if r.status_code != 200:
        raise SystemExit(f"bench call failed: HTTP {r.status_code} {r.text[:200]}")
    return (w1 - w0) * 1000, (c1 - c0) * 1000


def _clients(key: str) -> tuple[Any, Any]:
    import httpx

    from chutes_subnet.client import ClientPolicy, E2EETransport

    dev = ClientPolicy.development(gpu_count=SIM_GPUS, dangerous_accept_simulated_tee=True)
    base = httpx.Client(transport=E2EETransport(key, verify="gateway"), timeout=60)
    verified = httpx.Client(transport=E2EETransport(key, policy=dev), timeout=60)
    return base, verified


def network_phase(url: str, key: str, warm_calls: int, cold_runs: int) -> dict[str, float]:
    out: dict[str, list[float]] = {k: [] for k in (
        "warm_base", "warm_verified", "cpu_base", "cpu_verified", "cold_base", "cold_verified",
        "cold_cpu_base", "cold_cpu_verified")}
    for _ in range(cold_runs):
        for name, http in zip(("base", "verified"), _clients(key), strict=True):
            wall, cpu = _call(http, url)
            out[f"cold_{name}"].append(wall)
            out[f"cold_cpu_{name}"].append(cpu)
            http.close()
    base, verified = _clients(key)
    _call(base, url)
    _call(verified, url)  # verifies once, then pinned
    for i in range(warm_calls):
        pair = ((base, "base"), (verified, "verified"))
        for http, name in (pair if i % 2 == 0 else pair[::-1]):
            wall, cpu = _call(http, url)
            out[f"warm_{name}"].append(wall)
            out[f"cpu_{name}"].append(cpu)
    base.close()
    verified.close()
    return {k: _median(v) for k, v in out.items()}


def vector_phase(runs: int) -> dict[str, float]:
    """CPU of one cold client verification of real TDX + 8 real H100 evidence."""
    from chutes_subnet.attestation.verify._linkcache import SHARED_LINKS
    from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
    from chutes_subnet.attestation.verify.quote import parse_quote
    from chutes_subnet.attestation.verify.verifier import Verifier
    from chutes_subnet.client.pins import CollateralCache
    from chutes_subnet.client.verify import check_instance, parse_answer
    from chutes_subnet.e2ee import KeyPair
    from chutes_subnet.instance_id import instance_id_for_key
    from chutes_subnet.wire.protocol import chute_id_for_model
    from tests.vector_files import VECTORS_DIR

    quote = (VECTORS_DIR / "tdx" / "tdx_v4_quote.bin").read_bytes()
    collateral = (VECTORS_DIR / "tdx" / "tdx_v4_quote.collateral.json").read_text()
    gpus = json.loads((VECTORS_DIR / "gpu" / "h100x8_evidence.json").read_text())
    now, nonce = 1751624191, bytes.fromhex(gpus[0]["nonce"])
    kp = KeyPair.generate()
    answer = json.dumps({
        "instance_id": instance_id_for_key(kp.public_bytes), "model": MODEL,
        "chute_id": chute_id_for_model(MODEL), "hotkey": "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
        "e2e_pubkey": kp.public_b64, "tdx_quote": base64.b64encode(quote).decode(),
        "gpu_evidence": gpus, "e2e_versions": [2],
        "receipt_pubkey": base64.b64encode(bytes(range(32))).decode()}).encode()
    policy = Policy.default().with_profiles(
        MeasurementProfile("vec", parse_quote(quote).report.measurements, "H100", 8))

    def cold(with_collateral: bool, cache: CollateralCache, fresh_links: bool = True) -> float:
        if fresh_links:  # a machine this process never saw: no GPU link remembered
            SHARED_LINKS.clear()
        c0 = time.process_time()
        parsed = parse_answer(answer)
        if with_collateral:
            cache = CollateralCache()
            cache.put(parsed.evidence.tdx_quote, collateral, now)
        v = check_instance(Verifier(policy, cache), instance_id=parsed.response.instance_id,
                           offered_pubkey=kp.public_bytes, nonce=nonce, answer=parsed, now=now)
        spent = (time.process_time() - c0) * 1000
        if [r.code for r in v.reasons] != ["workload_event_missing", "binding_mismatch"]:
            raise SystemExit(f"unexpected verdict on the vectors: {v.reasons}")
        return spent

    warm_cache = CollateralCache()
    warm_cache.put(quote, collateral, now)
    cold(True, warm_cache)  # imports, first-use caches
    with_coll = _median([cold(True, warm_cache) for _ in range(runs)])
    cached = _median([cold(False, warm_cache) for _ in range(runs)])
    again = _median([cold(False, warm_cache, fresh_links=False) for _ in range(runs)])
    return {"cold_cpu_ms_with_collateral": with_coll, "cold_cpu_ms_collateral_cached": cached,
            "reverify_cpu_ms_same_machine": again}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        _serve()
        return 0
    warm_calls, cold_runs, vec_runs = (60, 3, 20) if args.quick else (400, 10, 100)
    vec = vector_phase(vec_runs)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline() if proc.stdout is not None else ""
        if not line:
            raise SystemExit("server process did not start")
        info = json.loads(line)
        net = network_phase(info["gateway"], info["key"], warm_calls, cold_runs)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    overhead = (net["warm_verified"] - net["warm_base"]) / net["warm_base"] * 100
    cpu_over = (net["cpu_verified"] - net["cpu_base"]) / net["warm_base"] * 100
    rows = [
        ("warm round trip, unverified client (today)", f"{net['warm_base']:.2f} ms", "1.00x"),
        ("warm round trip, verified + pinned (default)", f"{net['warm_verified']:.2f} ms",
         f"{net['warm_verified'] / net['warm_base']:.3f}x"),
        ("  overhead, wall (goal <= 2 %)", f"{overhead:+.2f} %", ""),
        ("  client CPU/call unverified / verified",
         f"{net['cpu_base']:.3f} / {net['cpu_verified']:.3f} ms",
         f"{cpu_over:+.2f} % of RT"),
        ("cold first call, unverified", f"{net['cold_base']:.1f} ms", "1.00x"),
        ("cold first call, verified (challenge relay + check)", f"{net['cold_verified']:.1f} ms",
         f"{net['cold_verified'] / net['cold_base']:.2f}x"),
        ("  client CPU of that first call unverified / verified",
         f"{net['cold_cpu_base']:.1f} / {net['cold_cpu_verified']:.1f} ms", ""),
        ("cold verification CPU, real TDX + 8 H100 (goal <= 10 ms)",
         f"{vec['cold_cpu_ms_with_collateral']:.2f} ms", "collateral from gateway"),
        ("  same, platform collateral already cached",
         f"{vec['cold_cpu_ms_collateral_cached']:.2f} ms", ""),
        ("  re-verification of a machine seen before (pin expiry)",
         f"{vec['reverify_cpu_ms_same_machine']:.2f} ms", "GPU links remembered"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"client verification ({'quick' if args.quick else 'full'}: {warm_calls} warm calls "
          f"per client, {cold_runs} cold, {vec_runs} vector runs)")
    for name, value, ratio in rows:
        print(f"  {name:<{width}}  {value:>18}  {ratio}")
    print(json.dumps({"bench": "client", "warm_calls": warm_calls,
                      "warm_rt_ms_unverified": round(net["warm_base"], 3),
                      "warm_rt_ms_verified": round(net["warm_verified"], 3),
                      "warm_overhead_pct": round(overhead, 2),
                      "warm_cpu_ms_unverified": round(net["cpu_base"], 3),
                      "warm_cpu_ms_verified": round(net["cpu_verified"], 3),
                      "cold_ms_unverified": round(net["cold_base"], 2),
                      "cold_ms_verified": round(net["cold_verified"], 2),
                      "cold_cpu_ms_verified_call": round(net["cold_cpu_verified"], 2),
                      **{k: round(v, 3) for k, v in vec.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
