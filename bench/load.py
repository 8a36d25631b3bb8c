"""Load test: many concurrent E2EE clients -> gateway process -> miner processes.

Everything runs on loopback as separate processes: N miners (``python -m
chutes_subnet.miner.cli``, simulated TEE, embedded model), the gateway (``python -m
chutes_subnet.gateway gateway`` on SQLite stores, signing every forward with the
validator hotkey, which the miners verify), and this driver. A real validator round (btauth/1 attestation + encrypted benchmark) publishes
the miners into the gateway's registry first.

Each request carries a unique tag inside its *encrypted* prompt. Requests are mixed
stream / non-stream and E2EE v1 / v2 (round robin over the four combinations), sent
by ``--clients`` concurrent clients, each with its own API key (a distinct user: a key
may hold only ``max_live_nonces_per_key`` live nonces) and its own v1 and v2
transport. Reported:

* completed, failed by reason, **lost** (a request with neither answer nor error) and
  **duplicated** (a tag answered twice, or more executions at the miners than answers
  delivered, or a nonce the miners saw twice);
* answers checked against the embedded model recomputed locally for a sample of tags
  (a swapped or misrouted answer would not match its own prompt);
* latency p50/p99 per request, requests/s;
* RSS of every miner, the gateway and the driver, after warm-up and at the end.

    python bench/load.py                 # 10,000 requests, 100 clients, 3 miners
    python bench/load.py --quick         # 1,000 requests, 100 clients
    python bench/load.py --requests 200 --clients 20   # the CI smoke size

Prints a table, then one line of JSON with the figures (``--json-out`` also writes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from chutes_subnet.client import AsyncE2EETransport  # noqa: E402
from chutes_subnet.errors import ChutesSubnetError  # noqa: E402
from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED, reference_completion  # noqa: E402
from chutes_subnet.registry import SQLiteInstanceRegistry  # noqa: E402
from tests.reliability_harness import LoopbackSubnet, miner_counter, rss_kib  # noqa: E402

PATH = "/v1/chat/completions"
WARMUP = 30


@dataclass
class Outcome:
    ok: bool
    latency_s: float
    reason: str = ""
    text: str = ""


@dataclass
class Tally:
    """Every outcome by tag; a second outcome for a tag counts as a duplicate."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    duplicates: int = 0

    def record(self, tag: int, outcome: Outcome) -> None:
        if tag in self.outcomes:
            self.duplicates += 1
            return
        self.outcomes[tag] = outcome


def payload(tag: int, stream: bool, max_tokens: int) -> dict[str, Any]:
    """The request for ``tag``: the tag is only inside the (encrypted) prompt."""
    return {"model": DEFAULT_MODEL_ID, "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": f"load {tag:06d}"}]}


def plan(tag: int) -> tuple[bool, int]:
    """(stream, version) for ``tag``: round robin over the four combinations."""
    return tag % 2 == 1, 2 if (tag // 2) % 2 == 0 else 1


async def _read_stream(resp: httpx.Response) -> tuple[str, str]:
    """(text, error) of a decrypted SSE answer; error is empty when it ended cleanly."""
    text, done = [], False
    async for line in resp.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            return "".join(text), f"stream_error:{event['error']}"
        for choice in event.get("choices") or ():
            text.append((choice.get("delta") or {}).get("content") or "")
    return "".join(text), "" if done else "stream_ended_without_done"


async def one_request(http: httpx.AsyncClient, url: str, tag: int, stream: bool,
                      max_tokens: int) -> Outcome:
    """Send one encrypted chat completion; never raises (failures become outcomes)."""
    t0 = time.perf_counter()
    body = payload(tag, stream, max_tokens)
    try:
        if stream:
            async with http.stream("POST", url, json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    return Outcome(False, time.perf_counter() - t0, _http_reason(resp))
                text, error = await _read_stream(resp)
        else:
            resp = await http.post(url, json=body)
            if resp.status_code != 200:
                return Outcome(False, time.perf_counter() - t0, _http_reason(resp))
            text, error = resp.json()["choices"][0]["message"]["content"] or "", ""
    except (httpx.HTTPError, ChutesSubnetError, ValueError, KeyError) as exc:
        return Outcome(False, time.perf_counter() - t0, type(exc).__name__)
    if error:
        return Outcome(False, time.perf_counter() - t0, error)
    return Outcome(True, time.perf_counter() - t0, text=text)


def _http_reason(resp: httpx.Response) -> str:
    try:
        reason = resp.json().get("reason", "")
    except ValueError:
        reason = ""
    return f"http_{resp.status_code}{':' + reason if reason else ''}"


async def drive(gateway_url: str, api_keys: list[str], *, requests: int, clients: int,
                max_tokens: int, first_tag: int = 0, timeout: float = 120.0,
                keepalive_expiry: float = 5.0) -> tuple[Tally, float]:
    """Run ``requests`` tagged requests from ``clients`` concurrent clients (client ``i``
    uses ``api_keys[i % len(api_keys)]``)."""
    tally = Tally()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for tag in range(first_tag, first_tag + requests):
        queue.put_nowait(tag)
    url = f"{gateway_url}{PATH}"

    async def client(api_key: str) -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        limits = httpx.Limits(max_connections=4, max_keepalive_connections=4,
                              keepalive_expiry=keepalive_expiry)
        by_version = {v: httpx.AsyncClient(transport=AsyncE2EETransport(
            versions=(v,), inner=httpx.AsyncHTTPTransport(limits=limits), verify="gateway"),
            headers=headers, timeout=timeout) for v in (1, 2)}
        try:
            while True:
                try:
                    tag = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                stream, version = plan(tag)
                tally.record(tag, await one_request(by_version[version], url, tag, stream,
                                                    max_tokens))
        finally:
            for http in by_version.values():
                await http.aclose()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(api_keys[i % len(api_keys)]) for i in range(clients)))
    return tally, time.perf_counter() - t0


def verify_sample(tally: Tally, every: int, max_tokens: int) -> tuple[int, int]:
    """(checked, mismatched): answers recomputed locally for every ``every``-th tag."""
    checked = mismatched = 0
    for tag, out in sorted(tally.outcomes.items()):
        if not out.ok or tag % every:
            continue
        stream, _ = plan(tag)
        expected = reference_completion(PATH, payload(tag, stream, max_tokens), seed=DEFAULT_SEED)
        checked += 1
        mismatched += out.text != expected
    return checked, mismatched


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _miner_counts(subnet: LoopbackSubnet) -> dict[str, float]:
    texts = [m.metrics() for m in subnet.miners]
    return {
        "invoke_200": sum(miner_counter(t, "chutes_miner_requests", route="invoke", status="200")
                          for t in texts),
        "invoke_all": sum(miner_counter(t, "chutes_miner_requests", route="invoke") for t in texts),
        "replayed": sum(miner_counter(t, "chutes_miner_errors", reason="replayed") for t in texts),
    }


def _rss(subnet: LoopbackSubnet) -> dict[str, int]:
    out = {m.name: m.rss_kib() for m in subnet.miners}
    assert subnet.gateway is not None
    out["gateway"] = subnet.gateway.rss_kib()
    out["driver"] = rss_kib(os.getpid())
    return out


async def _sample_rss(subnet: LoopbackSubnet, into: list[dict[str, int]]) -> None:
    """Append every process's RSS once a second until cancelled."""
    while True:
        into.append(_rss(subnet))
        await asyncio.sleep(1.0)


async def _metered_requests(gateway_url: str, api_keys: list[str]) -> int:
    """Requests the gateway billed, summed over every key of the run."""
    total = 0
    async with httpx.AsyncClient(timeout=10) as http:
        for key in api_keys:
            resp = await http.get(f"{gateway_url}/v1/usage",
                                  headers={"Authorization": f"Bearer {key}"})
            total += int(resp.json()["requests"])
    return total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the subnet, warm up, run the load, collect the figures."""
    workdir = Path(tempfile.mkdtemp(prefix="chutes-load-"))
    t_setup = time.perf_counter()
    with LoopbackSubnet(workdir) as subnet:
        for i in range(args.miners):
            subnet.add_miner(f"m{i}", invoke_auth=args.invoke_auth,
                             max_concurrency=args.clients * 2,
                             request_timeout=60.0)
        subnet.wait_miners()
        registry = SQLiteInstanceRegistry(str(subnet.registry_path))
        report = await subnet.publish(registry)
        published = len(registry.list_verified())
        if published != args.miners:
            raise RuntimeError(f"validator published {published}/{args.miners} miners: "
                               f"{[(r.uid, r.reason) for r in report.results]}")
        gw = subnet.start_gateway(nonces_per_instance=args.nonces_per_instance,
                                  sign=args.invoke_auth == "validator",
                                  extra_keys=args.clients - 1)
        setup_s = time.perf_counter() - t_setup

        warm, _ = await drive(gw.url, gw.api_keys, requests=WARMUP, clients=min(10, args.clients),
                              max_tokens=args.max_tokens, first_tag=10**6)
        if not all(o.ok for o in warm.outcomes.values()):
            raise RuntimeError(f"warm-up failed: {Counter(o.reason for o in warm.outcomes.values())}")
        rss_before = _rss(subnet)
        counts_before = _miner_counts(subnet)
        usage_before = await _metered_requests(gw.url, gw.api_keys)

        samples: list[dict[str, int]] = []
        sampler = asyncio.create_task(_sample_rss(subnet, samples))
        tally, wall = await drive(gw.url, gw.api_keys, requests=args.requests,
                                  clients=args.clients, max_tokens=args.max_tokens,
                                  keepalive_expiry=args.keepalive_expiry)
        sampler.cancel()

        rss_after = _rss(subnet)
        counts_after = _miner_counts(subnet)
        await asyncio.sleep(1.2)  # one usage flush interval
        usage_after = await _metered_requests(gw.url, gw.api_keys)
        alive = {p.name: p.alive() for p in [*subnet.miners, gw]}
    checked, mismatched = await asyncio.to_thread(verify_sample, tally, args.verify_every,
                                                  args.max_tokens)

    outs = tally.outcomes
    ok = [o for o in outs.values() if o.ok]
    lat = [o.latency_s * 1000 for o in ok]
    executed = counts_after["invoke_200"] - counts_before["invoke_200"]
    mix = Counter(plan(t) for t in outs)
    return {
        "requests": args.requests, "clients": args.clients, "miners": args.miners,
        "max_tokens": args.max_tokens, "keepalive_expiry_s": args.keepalive_expiry,
        "invoke_auth": args.invoke_auth,
        "setup_s": round(setup_s, 1), "wall_s": round(wall, 1),
        "mix": {f"{'stream' if s else 'json'}_v{v}": n for (s, v), n in sorted(mix.items())},
        "completed": len(ok),
        "failed": dict(Counter(o.reason for o in outs.values() if not o.ok)),
        "lost": args.requests - len(outs),
        # a tag answered twice, a nonce a miner saw twice, or more executions than requests
        "duplicated": tally.duplicates + int(counts_after["replayed"])
        + int(max(0.0, executed - args.requests)),
        "miner_executions": int(executed),
        "executions_without_answer": int(executed) - len(ok),
        "gateway_metered_requests": int(usage_after - usage_before),
        "nonce_replays_at_miners": int(counts_after["replayed"]),
        "answers_checked": checked, "answers_wrong": mismatched,
        "req_per_s": round(len(ok) / wall, 1) if wall else 0.0,
        "p50_ms": round(percentile(lat, 0.50), 1), "p99_ms": round(percentile(lat, 0.99), 1),
        "mean_ms": round(statistics.fmean(lat), 1) if lat else 0.0,
        "rss_kib_before": rss_before, "rss_kib_after": rss_after,
        "rss_growth_kib": {k: rss_after[k] - rss_before[k] for k in rss_before},
        # halfway through the run, and the peak of the 1 s samples: growth that stops
        # early (caches and pools filling) is bounded; growth that tracks the request
        # count would show as mid << after
        "rss_kib_mid": samples[len(samples) // 2] if samples else rss_before,
        "rss_kib_peak": {k: max(s[k] for s in samples) for k in rss_before} if samples
        else rss_after,
        "processes_alive_at_end": alive,
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"\nload: {r['requests']} requests, {r['clients']} clients, {r['miners']} miners, "
          f"max_tokens {r['max_tokens']}  (setup {r['setup_s']} s, run {r['wall_s']} s)")
    print(f"  mix                     {r['mix']}")
    rows = [("completed", r["completed"]), ("failed", sum(r["failed"].values())),
            ("lost", r["lost"]), ("duplicated", r["duplicated"]),
            ("miner executions", r["miner_executions"]),
            ("gateway metered", r["gateway_metered_requests"]),
            ("answers checked / wrong", f"{r['answers_checked']} / {r['answers_wrong']}"),
            ("requests/s", r["req_per_s"]),
            ("latency p50 / p99 ms", f"{r['p50_ms']} / {r['p99_ms']}")]
    for name, value in rows:
        print(f"  {name:<24}{value}")
    for reason, n in sorted(r["failed"].items()):
        print(f"    failed {reason:<32}{n}")
    print(f"  {'process':<12}{'RSS before MiB':>16}{'mid MiB':>10}{'after MiB':>11}"
          f"{'peak MiB':>10}{'growth MiB':>12}")
    for name, before in r["rss_kib_before"].items():
        after, mid, peak = (r[k][name] for k in ("rss_kib_after", "rss_kib_mid", "rss_kib_peak"))
        print(f"  {name:<12}{before / 1024:>16.1f}{mid / 1024:>10.1f}{after / 1024:>11.1f}"
              f"{peak / 1024:>10.1f}{(after - before) / 1024:>12.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1,000 requests instead of 10,000")
    p.add_argument("--requests", type=int, default=None)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--miners", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=4)
    p.add_argument("--nonces-per-instance", type=int, default=32)
    p.add_argument("--verify-every", type=int, default=20,
                   help="recompute the answer of every N-th tag locally")
    p.add_argument("--keepalive-expiry", type=float, default=5.0,
                   help="seconds a client keeps an idle connection (httpx default 5.0, which "
                        "races uvicorn's 5 s server keep-alive)")
    p.add_argument("--invoke-auth", choices=("validator", "none"), default="validator",
                   help="validator: the gateway signs every forward with the validator "
                        "hotkey and miners verify it (production mode); none: open miners")
    p.add_argument("--json-out", help="also write the JSON figures to this file")
    args = p.parse_args(argv)
    if args.requests is None:
        args.requests = 1000 if args.quick else 10_000
    result = asyncio.run(run(args))
    print_table(result)
    line = json.dumps(result, sort_keys=True)
    if args.json_out:
        Path(args.json_out).write_text(line)
    print(line)
    healthy = (result["lost"] == 0 and result["duplicated"] == 0 and result["answers_wrong"] == 0
               and all(result["processes_alive_at_end"].values()))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
