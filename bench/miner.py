"""Miner benchmark: encrypted vs plaintext inference through the same server, same run.

One real miner (its own process: uvicorn on loopback, embedded model, simulated TEE,
one torch thread) with the bench-only
``dangerous_plaintext_endpoint``: the plaintext route runs the very same handler minus
the envelope, so the difference is the price of E2EE (KEM + AEAD per request, AEAD per
chunk, on both ends). Streamed requests rotate plain / v2 (unpadded) / v2pad (padded,
the client default: the miner coalesces tokens after the first) / v1 so machine noise
hits all alike. Client-side figures, per request:

* TTFT: request sent -> first generated text decrypted;
* tokens/s: completion tokens / (last chunk - first chunk), i.e. decode speed.

Prints a table (medians), then one JSON line with the figures and the ratios.

    python bench/miner.py [--quick] [--rounds N] [--max-tokens N]
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider  # noqa: E402
from chutes_subnet.e2ee import PADDING_NONE, PADDING_PADME, RequestContext, v1, v2  # noqa: E402
from chutes_subnet.inference import make_backend  # noqa: E402
from chutes_subnet.miner import PLAINTEXT_PATH, MinerConfig, create_app  # noqa: E402
from chutes_subnet.sse import SSEParser  # noqa: E402
from chutes_subnet.wire.call import StreamDecoder  # noqa: E402
from tests.servers import free_port  # noqa: E402

PATH = "/v1/chat/completions"
PROMPT = [{"role": "user", "content": "Summarise the design of a confidential inference "
                                      "network in three sentences."}]


def _texts(plain_sse: bytes, parser: SSEParser) -> int:
    """Number of generated-text chunks in ``plain_sse`` (non-empty deltas)."""
    n = 0
    for data in parser.feed(plain_sse):
        if data == "[DONE]":
            continue
        ev = json.loads(data)
        n += sum(1 for c in ev.get("choices") or () if c.get("delta", {}).get("content"))
    return n


def one(http: httpx.Client, url: str, inst: Any, mode: str, max_tokens: int,
        counter: list[int]) -> tuple[float, float, int]:
    """One streamed request; returns (ttft s, tokens/s, completion chunks)."""
    counter[0] += 1
    nonce = f"{counter[0]:032x}"
    body = {"model": inst.model_id, "messages": PROMPT, "max_tokens": max_tokens}
    headers = {"X-Chute-Id": inst.chute_id, "X-Instance-Id": inst.instance_id,
               "X-E2E-Nonce": nonce, "X-E2E-Stream": "true", "X-E2E-Path": PATH}
    pk = base64.b64decode(inst.e2e_pubkey)
    target = url + "/e2e/invoke"
    t0 = time.perf_counter()
    if mode == "plain":
        blob, decoder = json.dumps(body).encode(), None
        target = url + PLAINTEXT_PATH
    elif mode in ("v2", "v2pad"):
        padding = PADDING_PADME if mode == "v2pad" else PADDING_NONE
        blob, session = v2.seal_request(
            pk, RequestContext(inst.chute_id, inst.instance_id, nonce, PATH, True, padding), body)
        headers["X-E2E-Version"] = "2"
        if padding != PADDING_NONE:
            headers["X-E2E-Padding"] = str(padding)
        decoder = StreamDecoder(2, session)
    else:
        blob, key = v1.seal_request(pk, body)
        decoder = StreamDecoder(1, key)
    parser = SSEParser()
    first = last = 0.0
    tokens = 0
    with http.stream("POST", target, content=blob, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{mode}: HTTP {r.status_code}")
        for raw in r.iter_raw():
            plain = decoder.feed(raw) if decoder is not None else raw
            got = _texts(plain, parser)
            if got:
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += got
        if decoder is not None:
            decoder.finish()
    rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0
    return first - t0, rate, tokens


def _serve(port: int, coalesce_ms: float | None) -> None:
    import uvicorn

    extra = {} if coalesce_ms is None else {"stream_coalesce_ms": coalesce_ms}
    cfg = MinerConfig(tee="simulated", invoke_auth="none", dangerous_plaintext_endpoint=True,
                      port=port, **extra)
    app = create_app(cfg, hotkey_ss58="5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
                     backend=make_backend("embedded"), provider=SimulatedProvider(gpu_count=1),
                     gate=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _wait(url: str, proc: Any) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError("miner process died")
        try:
            r = httpx.post(url + "/attest", json={"nonce": "00" * 32}, timeout=5)
            if r.status_code == 200:
                a = r.json()
                return SimpleNamespace(instance_id=a["instance_id"], chute_id=a["chute_id"],
                                       model_id=a["model"], e2e_pubkey=a["e2e_pubkey"])
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("miner did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter requests")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--coalesce-ms", type=float, default=None,
                    help="the miner's --stream.coalesce_ms (default: its default; 0: off)")
    args = ap.parse_args()
    rounds = args.rounds or (8 if args.quick else 30)
    max_tokens = args.max_tokens or (128 if args.quick else 512)

    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(port, args.coalesce_ms), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    modes = ("plain", "v2", "v2pad", "v1")
    res: dict[str, dict[str, list[float]]] = {m: {"ttft": [], "tps": []} for m in modes}
    counter = [0]
    try:
        inst = _wait(url, proc)
        with httpx.Client(timeout=120) as http:
            for mode in modes:  # warm-up (model, connection, code paths)
                one(http, url, inst, mode, 16, counter)
            for i in range(rounds):
                order = modes[i % len(modes):] + modes[: i % len(modes)]
                for mode in order:
                    ttft, tps, _ = one(http, url, inst, mode, max_tokens, counter)
                    res[mode]["ttft"].append(ttft)
                    res[mode]["tps"].append(tps)
    finally:
        proc.terminate()
        proc.join(10)

    med = {m: {"ttft_ms": statistics.median(r["ttft"]) * 1000,
               "tokens_per_s": statistics.median(r["tps"])} for m, r in res.items()}
    print(f"miner bench: {rounds} rounds x {len(modes)} modes, {max_tokens} tokens, "
          f"embedded model, loopback, medians, coalesce_ms={args.coalesce_ms}")
    print(f"{'mode':<8}{'TTFT ms':>10}{'tokens/s':>12}{'tok/s vs plain':>16}{'TTFT +ms':>10}")
    for m in modes:
        ratio = med[m]["tokens_per_s"] / med["plain"]["tokens_per_s"]
        extra = med[m]["ttft_ms"] - med["plain"]["ttft_ms"]
        print(f"{m:<8}{med[m]['ttft_ms']:>10.2f}{med[m]['tokens_per_s']:>12.1f}"
              f"{ratio:>16.3f}{extra:>10.2f}")
    figures = {
        "rounds": rounds, "max_tokens": max_tokens, "coalesce_ms": args.coalesce_ms,
        **{f"{m}_{k}": round(v, 3) for m in modes for k, v in med[m].items()},
        **{f"{m}_tps_ratio": round(med[m]["tokens_per_s"] / med["plain"]["tokens_per_s"], 4)
           for m in modes if m != "plain"},
        **{f"{m}_ttft_overhead_ms": round(med[m]["ttft_ms"] - med["plain"]["ttft_ms"], 3)
           for m in modes if m != "plain"},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
