"""E2EE envelope cost: round trips by payload size, throughput vs raw AEAD, stream chunks, ML-KEM.

Usage: python bench/e2ee.py [--quick]

Prints a table and ends with one line of JSON holding every figure. All numbers are
CPU time of one thread measured in this run (median of repeats), so ratios compare
like with like on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

from chutes_subnet.e2ee import GZIP_IMPL, KEM_BACKEND, KeyPair, RequestContext, _kem, v1, v2  # noqa: E402

SIZES = {"1KiB": 1024, "4KiB": 4096, "64KiB": 65536, "1MiB": 1 << 20}
CTX = RequestContext("chute", "instance", "0123456789abcdef0123456789abcdef", "/v1/chat/completions", False)
WORDS = "the of and to in is that for it as was with be by on not he this are or his from at which but have".split()


def _median_us(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.process_time_ns()
        for _ in range(inner):
            fn()
        samples.append((time.process_time_ns() - t0) / inner / 1000)
    return statistics.median(samples)


def _payload(size: int) -> dict:
    rng = random.Random(size)
    text = []
    n = 0
    while n < size:
        w = rng.choice(WORDS)
        text.append(w)
        n += len(w) + 1
    return {"model": "m", "messages": [{"role": "user", "content": " ".join(text)[: size - 60]}]}


def bench_round_trips(repeats: int) -> dict[str, dict[str, float]]:
    kp = KeyPair.generate()
    out: dict[str, dict[str, float]] = {}
    for label, size in SIZES.items():
        payload = _payload(size)
        reps = max(3, repeats // (16 if size >= 65536 else 1))

        def v2_rt() -> None:
            blob, client = v2.seal_request(kp.public_bytes, CTX, payload)
            got, server = v2.open_request(kp, CTX, blob)
            client.open_response(server.seal_response(got))

        def v1_rt() -> None:
            blob, key = v1.seal_request(kp.public_bytes, payload)
            got, rpk = v1.open_request(kp, blob)
            v1.open_response(key, v1.seal_response(rpk, got))

        out[label] = {"v2_us": _median_us(v2_rt, reps), "v1_us": _median_us(v1_rt, reps)}
    return out


def bench_throughput(repeats: int) -> dict[str, float]:
    """1 MiB request sealed+opened by the envelope vs raw ChaCha20-Poly1305 encrypt+decrypt."""
    kp = KeyPair.generate()
    raw = json.dumps(_payload(1 << 20), separators=(",", ":")).encode()
    key, nonce = os.urandom(32), os.urandom(12)
    aead = ChaCha20Poly1305(key)

    def raw_aead() -> None:
        aead.decrypt(nonce, aead.encrypt(nonce, raw, None), None)

    def envelope() -> None:  # gzip + ML-KEM + HKDF + AEAD both ways; JSON parsing is the app's
        blob, _ = v2.seal_request(kp.public_bytes, CTX, raw)
        v2.open_request_raw(kp, CTX, blob)

    reps = max(5, repeats // 4)
    raw_us = _median_us(raw_aead, reps)
    env_us = _median_us(envelope, reps)
    from chutes_subnet.e2ee import _codec

    comp = _codec.compress(raw)
    gzip_us = _median_us(lambda: _codec.decompress(_codec.compress(raw), 1 << 25), reps)
    mib = len(raw) / (1 << 20)
    return {
        "payload_bytes": len(raw),
        "raw_aead_MiBps": mib / (raw_us / 1e6),
        "envelope_MiBps": mib / (env_us / 1e6),
        "ratio": raw_us / env_us,
        "gzip_share": gzip_us / env_us,
        "compressed_bytes": len(comp),
    }


def bench_stream(repeats: int) -> dict[str, float]:
    kp = KeyPair.generate()
    ctx = RequestContext("c", "i", "n", "/v1/chat/completions", True)
    line = ('data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
            '"choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}').encode()
    blob, client = v2.seal_request(kp.public_bytes, ctx, {"x": 1})
    _, server = v2.open_request(kp, ctx, blob)
    n = 2000
    results = {}
    for _ in range(1):
        def run_v2() -> None:
            sealer, opener = server.stream_sealer(), client.stream_opener()
            for _ in range(n):
                opener.open(sealer.seal(line))

        def run_v1() -> None:
            b, key = v1.seal_request(kp.public_bytes, {})
            _, rpk = v1.open_request(kp, b)
            sealer, opener = v1.StreamSealer(rpk), v1.StreamOpener(key)
            opener.open_init(sealer.init_event()["e2e_init"])
            text = line.decode()
            for _ in range(n):
                opener.open_line(sealer.seal_line(text)["e2e"])

        reps = max(3, repeats // 10)
        results["v2_chunk_us"] = _median_us(run_v2, reps) / n
        results["v1_chunk_us"] = _median_us(run_v1, reps) / n
    return results


def bench_kem(repeats: int) -> dict[str, float]:
    out = {}
    for backend in ("cryptography", "pqcrypto"):
        handle, pk = _kem.generate(backend)
        ct, _ = _kem.encapsulate(pk, backend)
        out[f"{backend}_keygen_us"] = _median_us(lambda: _kem.generate(backend), repeats, 10)
        out[f"{backend}_encaps_us"] = _median_us(lambda: _kem.encapsulate(pk, backend), repeats, 10)
        out[f"{backend}_decaps_us"] = _median_us(lambda: _kem.decapsulate(handle, ct), repeats, 10)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke run)")
    args = ap.parse_args()
    repeats = 15 if args.quick else 101

    rt = bench_round_trips(repeats)
    tp = bench_throughput(repeats)
    st = bench_stream(repeats)
    kem = bench_kem(repeats)

    print(f"E2EE envelope benchmark  (KEM backend: {KEM_BACKEND}, gzip: {GZIP_IMPL}, repeats: {repeats})")
    print()
    print(f"{'payload':>8} | {'v2 req+resp round trip':>24} | {'v1 req+resp round trip':>24}")
    print("-" * 64)
    for label, r in rt.items():
        print(f"{label:>8} | {r['v2_us'] / 1000:>21.3f} ms | {r['v1_us'] / 1000:>21.3f} ms")
    print()
    print(f"1 MiB request seal+open: envelope {tp['envelope_MiBps']:.0f} MiB/s vs raw ChaCha20-Poly1305 "
          f"{tp['raw_aead_MiBps']:.0f} MiB/s  -> ratio {tp['ratio']:.2f} (target >= 0.5); "
          f"gzip+gunzip is {tp['gzip_share']:.0%} of the envelope's time "
          f"({tp['payload_bytes']} -> {tp['compressed_bytes']} bytes)")
    print(f"stream chunk seal+open: v2 {st['v2_chunk_us']:.2f} us, v1 {st['v1_chunk_us']:.2f} us (target <= 10 us)")
    print()
    print(f"{'ML-KEM-768':>12} | {'keygen':>9} | {'encaps':>9} | {'decaps':>9}")
    for b in ("cryptography", "pqcrypto"):
        print(f"{b:>12} | {kem[b + '_keygen_us']:>6.1f} us | {kem[b + '_encaps_us']:>6.1f} us | {kem[b + '_decaps_us']:>6.1f} us")
    print()
    v2_4k = rt["4KiB"]["v2_us"] / 1000
    print(f"targets: 4 KiB v2 round trip {v2_4k:.3f} ms (<= 0.3 ms) {'OK' if v2_4k <= 0.3 else 'MISSED'}; "
          f"1 MiB ratio {tp['ratio']:.2f} (>= 0.5) {'OK' if tp['ratio'] >= 0.5 else 'MISSED'}; "
          f"chunk {st['v2_chunk_us']:.2f} us (<= 10) {'OK' if st['v2_chunk_us'] <= 10 else 'MISSED'}")
    figures = {"bench": "e2ee", "quick": args.quick, "kem_backend": KEM_BACKEND, "gzip": GZIP_IMPL,
               "round_trip_us": rt, "throughput_1MiB": tp, "stream": st, "kem": kem}
    print(json.dumps(figures, separators=(",", ":"), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
