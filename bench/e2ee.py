"""E2EE envelope cost as ratios to the cryptographic floor measured in the same run.

Usage: python bench/e2ee.py [--quick]

* **Round trip** (client seals a JSON request, instance opens it and parses the JSON,
  instance seals a JSON answer, client opens and parses it) on realistic prose of
  1 KiB / 4 KiB / 64 KiB / 1 MiB, against the **floor**: one ML-KEM-768 encapsulation
  (parsed key) + one decapsulation + one HKDF + ChaCha20-Poly1305 seal and open over the
  request and the answer JSON bytes. Targets: <= 1.5x at 1 KiB and 4 KiB, <= 2x at 1 MiB.
* **Throughput**: 1 MiB sealed+opened by the envelope vs raw ChaCha20-Poly1305 (>= 0.5x).
* **Stream**: one frame sealed + opened vs one raw AEAD encrypt + decrypt of the same
  line (<= 1.3x), and microseconds per streamed token on the miner (chunk object -> JSON
  line -> SSE frame, with the coalescer's batching when coalesced) and on the client
  (SSE bytes -> plaintext lines), one token per frame and coalesced.
* **Receipts and padding**, each reported apart: the cost of signing + verifying one
  receipt, and of padded vs unpadded envelopes and frames (time and bytes).

All numbers are CPU time of one thread (median of repeats). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chutes_subnet.e2ee import GZIP_IMPL, KEM_BACKEND, KeyPair, RequestContext, _kem, v2

SIZES = {"1KiB": 1024, "4KiB": 4096, "64KiB": 65536, "1MiB": 1 << 20}
TARGETS = {"1KiB": 1.5, "4KiB": 1.5, "1MiB": 2.0}
NONCE = "0123456789abcdef0123456789abcdef"
WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her", "she", "there", "would", "their", "we", "him", "been", "has", "when", "who", "will", "more", "no", "if", "out", "so", "said", "what", "up", "its", "about", "into", "than", "them", "can", "only", "other", "new", "some", "could", "time", "these", "two", "may", "then", "do", "first", "any", "my", "now", "such", "like", "our", "over", "man", "me", "even", "most", "made", "after", "also", "did", "many", "before", "must", "through", "back", "years", "where", "much", "your", "way", "well", "down", "should", "because", "each", "just", "those", "people", "how", "too", "little", "state", "good", "very", "make", "world", "still", "own", "see", "men", "work", "long", "get", "here", "between", "both", "life", "being", "under", "never", "day", "same", "another", "know", "while", "last", "might", "us", "great", "old", "year", "off", "come", "since", "against", "go", "came", "right", "used", "take", "three"]
_HAS_PAD = hasattr(v2, "PADDING_PADME")
_HAS_RECEIPTS = hasattr(v2.ClientSession, "request_binding")
_HAS_COALESCE = hasattr(v2, "line_cost")


def _median_us(fn: Callable[[], object], repeats: int, inner: int = 1) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.process_time_ns()
        for _ in range(inner):
            fn()
        samples.append((time.process_time_ns() - t0) / inner / 1000)
    return statistics.median(samples)


def _interleaved_median_us(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median CPU time of each function, sampled round-robin (one call each per round), so
    that load from other processes falls on the floor and the envelope alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    clock = time.process_time_ns
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            samples[name].append((clock() - t0) / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def _prose(size: int, seed: int) -> str:
    rng = random.Random(seed)
    out, n = [], 0
    while n < size:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
        out.append(sentence)
        n += len(sentence) + 1
    return " ".join(out)[:size]


def request_payload(size: int) -> dict[str, Any]:
    """A chat request whose JSON is about ``size`` bytes of prose."""
    return {"model": "chutes/Example-8B", "stream": False, "max_tokens": 512, "temperature": 0.7,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": _prose(max(16, size - 200), size)}]}


def answer_payload(size: int) -> dict[str, Any]:
    """A chat completion whose JSON is about ``size`` bytes of prose."""
    return {"id": "chatcmpl-4f1c2a", "object": "chat.completion", "created": 1764650000,
            "model": "chutes/Example-8B",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": _prose(max(16, size - 250), size + 1)}}],
            "usage": {"prompt_tokens": size // 4, "completion_tokens": size // 4, "total_tokens": size // 2}}


def _ctx(stream: bool = False) -> RequestContext:
    """What clients send by default: padded when this version of the code pads."""
    ctx = RequestContext("chute", "instance", NONCE, "/v1/chat/completions", stream)
    return ctx.with_padding(v2.PADDING_PADME) if _HAS_PAD else ctx


def _ctx_unpadded(stream: bool = False) -> RequestContext:
    return RequestContext("chute", "instance", NONCE, "/v1/chat/completions", stream)


class Floor:
    """The irreducible cryptography of one round trip, on pre-serialised bytes."""

    def __init__(self) -> None:
        self.sk = mlkem.MLKEM768PrivateKey.generate()
        self.pk = self.sk.public_key()

    def round_trip(self, req: bytes, ans: bytes) -> None:
        secret, ct = self.pk.encapsulate()
        self.sk.decapsulate(ct)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"floor").derive(secret)
        aead, nonce = ChaCha20Poly1305(key), bytes(12)
        aead.decrypt(nonce, aead.encrypt(nonce, req, None), None)
        aead.decrypt(nonce, aead.encrypt(nonce, ans, None), None)


def _round_trip(kp: KeyPair, ctx: RequestContext, req: dict[str, Any], ans: dict[str, Any]) -> None:
    blob, client = v2.seal_request(kp.public_bytes, ctx, req)
    _got, server = v2.open_request(kp, ctx, blob)
    client.open_response(server.seal_response(ans))


def _wire_bytes(kp: KeyPair, ctx: RequestContext, req: dict[str, Any], ans: dict[str, Any]) -> int:
    blob, _client = v2.seal_request(kp.public_bytes, ctx, req)
    _, server = v2.open_request(kp, ctx, blob)
    return len(blob) + len(server.seal_response(ans))


def bench_round_trips(repeats: int) -> dict[str, dict[str, float]]:
    kp = KeyPair.generate()
    floor = Floor()
    out: dict[str, dict[str, float]] = {}
    for label, size in SIZES.items():
        req, ans = request_payload(size), answer_payload(size)
        req_b = json.dumps(req, separators=(",", ":")).encode()
        ans_b = json.dumps(ans, separators=(",", ":")).encode()
        reps = max(9, repeats // (8 if size >= 65536 else 1))

        fns: dict[str, Callable[[], object]] = {
            "floor_us": functools.partial(floor.round_trip, req_b, ans_b),
            "v2_us": functools.partial(_round_trip, kp, _ctx(), req, ans)}
        if _HAS_PAD:
            fns["v2_unpadded_us"] = functools.partial(_round_trip, kp, _ctx_unpadded(), req, ans)
        for fn in fns.values():  # warm up (first-call costs are not per-request costs)
            fn()
        row: dict[str, float] = {"req_json_bytes": len(req_b), **_interleaved_median_us(fns, reps)}
        row["ratio"] = row["v2_us"] / row["floor_us"]
        row["wire_bytes"] = _wire_bytes(kp, _ctx(), req, ans)
        if _HAS_PAD:
            row["wire_bytes_unpadded"] = _wire_bytes(kp, _ctx_unpadded(), req, ans)
        out[label] = row
    return out


def bench_throughput(repeats: int) -> dict[str, float]:
    """1 MiB request sealed + opened by the envelope (bytes in, bytes out) vs raw AEAD."""
    kp = KeyPair.generate()
    raw = json.dumps(request_payload(1 << 20), separators=(",", ":")).encode()
    key, nonce = os.urandom(32), os.urandom(12)
    aead = ChaCha20Poly1305(key)

    def raw_aead() -> None:
        aead.decrypt(nonce, aead.encrypt(nonce, raw, None), None)

    def envelope() -> None:
        blob, _ = v2.seal_request(kp.public_bytes, _ctx(), raw)
        v2.open_request_raw(kp, _ctx(), blob)

    envelope()
    got = _interleaved_median_us({"raw": raw_aead, "env": envelope}, max(9, repeats // 4))
    raw_us, env_us = got["raw"], got["env"]
    mib = len(raw) / (1 << 20)
    return {"payload_bytes": len(raw), "raw_aead_MiBps": mib / (raw_us / 1e6),
            "envelope_MiBps": mib / (env_us / 1e6), "ratio": raw_us / env_us}


CHUNK = {"id": "chatcmpl-4f1c2a", "object": "chat.completion.chunk", "created": 1764650000,
         "model": "chutes/Example-8B",
         "choices": [{"index": 0, "delta": {"content": " token"}, "finish_reason": None}]}


def bench_stream(repeats: int) -> dict[str, float]:
    from chutes_subnet.miner.envelopes import open_envelope

    kp = KeyPair.generate()
    n = 1000
    line = ("data: " + json.dumps(CHUNK, separators=(",", ":"))).encode()
    reps = max(5, repeats // 5)
    out: dict[str, float] = {}

    aead = ChaCha20Poly1305(os.urandom(32))
    nonce, aad = bytes(12), b"chunk" + bytes(64)

    def raw() -> None:
        for _ in range(n):
            aead.decrypt(nonce, aead.encrypt(nonce, line, aad), aad)

    bucket = bytes(512)

    def raw_bucket() -> None:
        for _ in range(n):
            aead.decrypt(nonce, aead.encrypt(nonce, bucket, aad), aad)

    def frames(ctx: RequestContext) -> Callable[[], None]:
        blob, client = v2.seal_request(kp.public_bytes, ctx, {"x": 1})
        _, server = v2.open_request(kp, ctx, blob)

        def run() -> None:  # the byte paths the miner's framer and the client's decoder use
            sealer, opener = server.stream_sealer(), client.stream_opener()
            seal = getattr(sealer, "seal_line", sealer.seal)
            open_ = getattr(opener, "open_lines", opener.open)
            for _ in range(n):
                open_(seal(line))
        return run

    fns: dict[str, Callable[[], object]] = {"raw_aead_us": raw, "raw_aead_512_us": raw_bucket,
                                            "frame_us": frames(_ctx_unpadded(True))}
    if _HAS_PAD:
        fns["frame_padded_us"] = frames(_ctx(True))
    out.update({k: v / n for k, v in _interleaved_median_us(fns, reps).items()})
    out["frame_ratio"] = out["frame_us"] / out["raw_aead_us"]
    if _HAS_PAD:
        out["frame_padded_ratio"] = out["frame_padded_us"] / out["raw_aead_512_us"]

    # whole per-token path as the miner and the client run it: miner (chunk object -> JSON
    # line -> SSE frame bytes, + the receipt's running hash; coalesced: + the coalescer's
    # batching), client (SSE bytes -> plaintext lines, + the receipt tap). Padding,
    # receipts and coalescing reported apart.
    from chutes_subnet.wire.call import StreamDecoder

    miner_line = _miner_line_encoder()

    def miner(opened: Any, events: list[bytes], hashed: bool, coalesced: bool) -> None:
        events.clear()
        framer = opened.stream()
        answer = hashlib.sha256()
        batches = _coalesced_batches(framer, miner_line, n) if coalesced else \
            ([miner_line(CHUNK)] for _ in range(n))
        for batch in batches:
            # this miner: UTF-8 lines, one frame per batch; older ones: one text line per frame
            ev = framer.chunk_lines(batch) if isinstance(batch[0], bytes) else framer.chunk(batch[0])
            if hashed:
                answer.update(ev)
            events.append(ev)

    def client_side(client: Any, events: list[bytes], tapped: bool) -> None:
        check = (lambda wire, digest: None) if tapped else None
        dec = StreamDecoder(2, client, receipt_check=check) if tapped else StreamDecoder(2, client)
        for ev in events:
            dec.feed(ev)

    variants = [("", _ctx(True), False), ("_unpadded", _ctx_unpadded(True), False)]
    if _HAS_COALESCE:
        variants.append(("_coalesced", _ctx(True), True))
    for label, ctx, coalesced in variants:
        blob, client = v2.seal_request(kp.public_bytes, ctx, {"x": 1})
        opened = open_envelope(2, kp, ctx, blob)
        events: list[bytes] = []
        out[f"miner_token_us{label}"] = _median_us(
            functools.partial(miner, opened, events, False, coalesced), reps) / n
        out[f"frame_bytes{label}"] = len(events[0])
        out[f"wire_bytes_per_token{label}"] = sum(map(len, events)) / n
        out[f"client_token_us{label}"] = _median_us(
            functools.partial(client_side, client, events, False), reps) / n
        if _HAS_RECEIPTS and label in ("", "_coalesced"):
            out[f"miner_token_us_receipt{label}"] = _median_us(
                functools.partial(miner, opened, events, True, coalesced), reps) / n
            out[f"client_token_us_receipt{label}"] = _median_us(
                functools.partial(client_side, client, events, True), reps) / n
    out["line_bytes"] = len(line) + 2
    return out


def _miner_line_encoder() -> Callable[[dict[str, Any]], Any]:
    """How this version of the miner turns a chunk object into its SSE line."""
    try:
        from chutes_subnet.e2ee import dump_json
    except ImportError:  # before orjson lines: stdlib JSON, text lines
        return lambda chunk: "data: " + json.dumps(chunk, separators=(",", ":"))
    return lambda chunk: b"data: " + dump_json(chunk)


def _coalesced_batches(framer: Any, encode: Callable[[dict[str, Any]], Any],
                       n: int) -> list[list[bytes]]:
    """n chunk lines through the miner's coalescer, all ready together (a fast model)."""
    import asyncio
    import contextlib

    from chutes_subnet.miner.coalesce import coalesce

    async def source() -> Any:
        for _ in range(n):
            yield encode(CHUNK)

    async def run() -> list[list[bytes]]:
        batches = coalesce(source(), window=1.0, capacity=framer.coalesce_capacity,
                           cost=v2.line_cost, eager_until=lambda _: True)
        async with contextlib.aclosing(batches):
            return [batch async for batch in batches]

    return asyncio.run(run())


def bench_receipts(repeats: int) -> dict[str, float]:
    try:
        from chutes_subnet import receipts
    except ImportError:
        return {}
    signer = receipts.ReceiptSigner.generate()
    binding = hashlib.sha256(b"request").digest()
    answer = os.urandom(4096)
    rec = signer.sign(request_binding=binding, answer_sha256=hashlib.sha256(answer).digest(),
                      prompt_tokens=100, completion_tokens=200, instance_id="i" * 32, issued_at_ms=1)
    pub = signer.public_bytes
    sign_us = _median_us(lambda: signer.sign(
        request_binding=binding, answer_sha256=hashlib.sha256(answer).digest(), prompt_tokens=100,
        completion_tokens=200, instance_id="i" * 32, issued_at_ms=1), repeats, 20)
    verify_us = _median_us(lambda: receipts.verify(rec, pub, request_binding=binding,
                                                   answer_sha256=hashlib.sha256(answer).digest()),
                           repeats, 20)
    return {"sign_us": sign_us, "verify_us": verify_us, "wire_chars": len(rec)}


def bench_kem(repeats: int) -> dict[str, float]:
    out = {}
    for backend in ("cryptography", "pqcrypto"):
        handle, pk = _kem.generate(backend)
        ct, _ = _kem.encapsulate(pk, backend)
        out[f"{backend}_encaps_us"] = _median_us(functools.partial(_kem.encapsulate, pk, backend), repeats, 10)
        out[f"{backend}_decaps_us"] = _median_us(functools.partial(_kem.decapsulate, handle, ct), repeats, 10)
    return out


def _ok(flag: bool) -> str:
    return "OK" if flag else "MISSED"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke run)")
    args = ap.parse_args()
    repeats = 31 if args.quick else 201

    rt = bench_round_trips(repeats)
    tp = bench_throughput(repeats)
    st = bench_stream(repeats)
    rc = bench_receipts(repeats)
    kem = bench_kem(repeats)

    print(f"E2EE envelope benchmark  (KEM: {KEM_BACKEND}, gzip: {GZIP_IMPL}, repeats: {repeats}, "
          f"padding: {'on' if _HAS_PAD else 'n/a'})")
    print()
    print(f"{'payload':>8} | {'floor':>9} | {'v2 round trip':>13} | {'ratio':>6} | target | "
          f"{'unpadded':>9} | {'wire bytes':>10} | {'unpadded':>9}")
    print("-" * 96)
    for label, r in rt.items():
        target = TARGETS.get(label)
        verdict = f"{_ok(r['ratio'] <= target)} {target}x" if target else "   -   "
        print(f"{label:>8} | {r['floor_us']:>6.0f} us | {r['v2_us']:>10.0f} us | {r['ratio']:>5.2f}x | "
              f"{verdict:<6} | {r.get('v2_unpadded_us', float('nan')):>6.0f} us | "
              f"{r['wire_bytes']:>10} | {r.get('wire_bytes_unpadded', 0):>9}")
    print()
    print(f"1 MiB seal+open: envelope {tp['envelope_MiBps']:.0f} MiB/s vs raw ChaCha20-Poly1305 "
          f"{tp['raw_aead_MiBps']:.0f} MiB/s -> {tp['ratio']:.2f}x ({_ok(tp['ratio'] >= 0.5)}, target >= 0.5)")
    print(f"stream frame seal+open {st['frame_us']:.2f} us vs raw AEAD {st['raw_aead_us']:.2f} us -> "
          f"{st['frame_ratio']:.2f}x ({_ok(st['frame_ratio'] <= 1.3)}, target <= 1.3)"
          + (f"; padded frame {st['frame_padded_us']:.2f} us vs raw AEAD over its 512 B "
             f"{st['raw_aead_512_us']:.2f} us -> {st['frame_padded_ratio']:.2f}x"
             if "frame_padded_us" in st else ""))
    print()
    print(f"{'per streamed token':>26} | {'miner':>8} | {'client':>8} | {'wire B/token':>12}")
    print("-" * 64)
    for label, name in (("_unpadded", "v2 unpadded"), ("", "v2 padded, 1 token/frame"),
                        ("_receipt", "  + receipt hash/tap"),
                        ("_coalesced", "v2 padded, coalesced"),
                        ("_receipt_coalesced", "  + receipt hash/tap")):
        if f"miner_token_us{label}" not in st:
            continue
        wire = st.get(f"wire_bytes_per_token{label}", st.get(
            "wire_bytes_per_token" + label.replace("_receipt", ""), float("nan")))
        print(f"{name:>26} | {st[f'miner_token_us{label}']:>5.2f} us | "
              f"{st[f'client_token_us{label}']:>5.2f} us | {wire:>12.0f}")
    print()
    print("cost of padding (padded - unpadded): round trip "
          + ", ".join(f"{k} {r['v2_us'] - r['v2_unpadded_us']:+.0f} us / "
                      f"{r['wire_bytes'] / r['wire_bytes_unpadded'] - 1:+.1%} bytes"
                      for k, r in rt.items() if "v2_unpadded_us" in r)
          + f"; per token {st['miner_token_us'] - st['miner_token_us_unpadded']:+.2f} us miner, "
            f"{st['client_token_us'] - st['client_token_us_unpadded']:+.2f} us client")
    if "miner_token_us_receipt" in st:
        print(f"cost of receipts: per answer sign {rc.get('sign_us', float('nan')):.1f} us "
              f"(instance) + verify {rc.get('verify_us', float('nan')):.1f} us (gateway, client); "
              f"per token {st['miner_token_us_receipt'] - st['miner_token_us']:+.2f} us miner, "
              f"{st['client_token_us_receipt'] - st['client_token_us']:+.2f} us client")
    if rc:
        print(f"receipt: sign {rc['sign_us']:.1f} us, verify {rc['verify_us']:.1f} us, "
              f"{rc['wire_chars']} header chars")
    print(f"ML-KEM-768 encaps/decaps: cryptography {kem['cryptography_encaps_us']:.0f}/"
          f"{kem['cryptography_decaps_us']:.0f} us, pqcrypto {kem['pqcrypto_encaps_us']:.0f}/"
          f"{kem['pqcrypto_decaps_us']:.0f} us")
    figures = {"bench": "e2ee", "quick": args.quick, "kem_backend": KEM_BACKEND, "gzip": GZIP_IMPL,
               "padding": _HAS_PAD, "round_trip": rt, "throughput_1MiB": tp, "stream": st,
               "receipts": rc, "kem": kem}
    print(json.dumps(figures, separators=(",", ":"), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
