"""Gateway routing benchmark: encrypted requests/s through the gateway, added latency.

Three processes on loopback: a trivial miner (returns a fixed ciphertext-sized answer
with a signed receipt, no model; on the server settings the real miner uses), the real
gateway (``python -m chutes_subnet.gateway gateway``), and this load generator (aiohttp). For each nonce backend (SQLite, then Redis on a private
redis-server) it measures

* routed requests/s at a fixed concurrency, every request with its own gateway
  nonce (consumed atomically), a 1 KiB sealed body, metering on;
* latency p50/p99 of sequential calls straight to the miner and through the gateway,
  interleaved in the same run; "added" is the difference.

Nonces are fetched before the timed phase (discovery is not routing). Baselines in
the same run, in front of the same miner, measured the same way (req/s and CPU of the
proxy process per request):

* ``relay`` — a do-nothing relay on the gateway's own stack (uvicorn + the gateway's
  keep-alive miner client): what routing would cost with no admission, nonce or
  metering at all;
* ``nginx`` — nginx (Debian package) as a keep-alive reverse proxy, one worker: the
  cost of relaying with a C proxy. Skipped with a note when nginx is not installed.

With ``--pin-proxy CPU`` the proxy under test (gateway, relay, nginx; with its worker
processes) runs on that one CPU only, while the miner and the load generator may use
every core: "req/s on one core" for each proxy, still measured in the same run.

Prints a table, then one JSON line with the figures (ratios against both baselines).

    python bench/gateway.py [--quick] [--concurrency 64] [--seconds 10] [--baselines relay,nginx]
                            [--pin-proxy CPU]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUTE = "00000000-0000-4000-8000-000000000001"
#: a v2-shaped envelope of a 1 KiB request: version byte, KEM ciphertext, sealed payload
BODY = b"\x02" + os.urandom(1088 + 1024 + 16)
ANSWER = os.urandom(1200)
#: the bench miner's receipt key (public: this is a bench, nothing is attested)
RECEIPT_SEED = bytes(range(32))


def _receipt_signer():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from chutes_subnet.receipts import ReceiptSigner

    return ReceiptSigner(Ed25519PrivateKey.from_private_bytes(RECEIPT_SEED))


#: the CPU the proxy under test is pinned to (None: not pinned)
_PIN_CPU: int | None = None


def _pinned() -> None:
    """``preexec_fn`` of a proxy process: run on ``_PIN_CPU`` only (children inherit it)."""
    if _PIN_CPU is not None:
        os.sched_setaffinity(0, {_PIN_CPU})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_SIGNER = None
_ANSWER_SHA256 = hashlib.sha256(ANSWER).digest()


async def trivial_miner(scope, receive, send):  # type: ignore[no-untyped-def]
    """ASGI app: drain the body, answer a fixed blob with its signed receipt (as a real
    instance does, so the gateway's receipt verification is part of what is measured)."""
    global _SIGNER
    from chutes_subnet.receipts import request_binding_for
    from chutes_subnet.wire.headers import InvokeHeaders

    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    if _SIGNER is None:
        _SIGNER = _receipt_signer()
    inv = InvokeHeaders.parse({k.decode().lower(): v.decode() for k, v in scope["headers"]})
    receipt = _SIGNER.sign(request_binding=request_binding_for(inv.version, body, inv.context()),
                           answer_sha256=_ANSWER_SHA256, prompt_tokens=12, completion_tokens=34,
                           instance_id=inv.instance_id, issued_at_ms=int(time.time() * 1000))
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(ANSWER)).encode()),
        (b"x-e2e-receipt", receipt.encode())]})
    await send({"type": "http.response.body", "body": ANSWER})


def _serve_relay(port: int, miner_port: int) -> None:
    """A do-nothing relay on the gateway's stack: read the body, POST it to the miner
    with the gateway's keep-alive client, relay the answer."""
    import uvicorn

    from chutes_subnet.gateway.miners import MinerClient

    client = MinerClient()
    target = f"http://127.0.0.1:{miner_port}/e2e/invoke"

    async def relay(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        forward = {k.decode(): v.decode() for k, v in scope["headers"]
                   if k.lower().startswith(b"x-") or k.lower() == b"content-type"}
        resp = await client.post(target, forward, body)
        try:
            await send({"type": "http.response.start", "status": resp.status, "headers": [
                (k.lower().encode(), resp.headers[k].encode()) for k in
                ("Content-Type", "X-E2E-Receipt", "X-E2E-Usage") if k in resp.headers]})
            async for chunk in resp.iter_chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            resp.release()

    from chutes_subnet.httpserver import server_options

    uvicorn.run(relay, host="127.0.0.1", port=port, log_level="warning", **server_options())


_NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    upstream miner {{ server 127.0.0.1:{miner}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;
        location / {{
            proxy_pass http://miner;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


class Baseline:
    """The trivial miner behind a relay (``relay``) or nginx (``nginx``)."""

    def __init__(self, tmp: Path, kind: str) -> None:
        self.kind = kind
        self.miner_port, self.port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "CHUTES_SUBNET_HOME": str(tmp)}
        self.procs = [subprocess.Popen(
            [sys.executable, __file__, "--serve-miner", str(self.miner_port)], env=env)]
        if kind == "relay":
            proxy = [sys.executable, __file__, "--serve-relay", str(self.port),
                     str(self.miner_port)]
        else:
            conf = tmp / f"nginx-{self.port}.conf"
            conf.write_text(_NGINX_CONF.format(tmp=tmp, miner=self.miner_port, port=self.port))
            proxy = [_nginx_binary() or "nginx", "-c", str(conf), "-p", str(tmp),
                     "-g", "daemon off;"]
        self.procs.append(subprocess.Popen(proxy, env=env, cwd=str(ROOT),
                                           stderr=subprocess.DEVNULL, preexec_fn=_pinned))
        time.sleep(0.3)
        _wait_post(self.url + "/e2e/invoke")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=15)


def _nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


#: invoke headers the baselines relay (the bench miner signs its receipt over them)
_BASELINE_HEADERS = {"X-Chute-Id": CHUTE, "X-Instance-Id": "bench-baseline",
                     "X-E2E-Nonce": "0" * 32, "X-E2E-Stream": "false",
                     "X-E2E-Path": "/v1/chat/completions", "X-E2E-Version": "2",
                     "Content-Type": "application/octet-stream"}


def _wait_post(url: str, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(
                url, data=BODY, headers=_BASELINE_HEADERS), timeout=1)
            return
        except Exception:  # noqa: BLE001
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def baseline_throughput(base: Baseline, concurrency: int,
                              seconds: float) -> tuple[float, float]:
    """(requests/s, proxy CPU microseconds per request) through a baseline proxy."""
    conn = aiohttp.TCPConnector(limit=concurrency)
    headers = _BASELINE_HEADERS
    async with aiohttp.ClientSession(connector=conn) as http:
        url = base.url + "/e2e/invoke"
        for _ in range(50):
            await _call(http, url, headers)
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await _call(http, url, headers)
                done += 1

        cpu0, t0 = _cpu_seconds(base.procs[1].pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, _cpu_seconds(base.procs[1].pid) - cpu0
        return done / wall, cpu / max(done, 1) * 1e6


def _serve_miner(port: int) -> None:
    """The trivial miner on the server settings every node of the project uses (as the
    real miner: bounded heads, a response's head and body in one write)."""
    import uvicorn

    from chutes_subnet.httpserver import server_options

    uvicorn.run(trivial_miner, host="127.0.0.1", port=port, log_level="warning",
                **server_options())


def _wait(url: str, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


class Stack:
    """Miner + gateway processes for one nonce backend."""

    def __init__(self, tmp: Path, nonces_url: str, workers: int = 1) -> None:
        from chutes_subnet.e2ee import KeyPair
        from chutes_subnet.gateway.api_keys import SQLiteApiKeyStore
        from chutes_subnet.registry import InstanceRecord, SQLiteInstanceRegistry

        self.miner_port, self.gw_port = _free_port(), _free_port()
        self.miner = f"http://127.0.0.1:{self.miner_port}"
        self.gw = f"http://127.0.0.1:{self.gw_port}"
        db = tmp / f"gw-{self.gw_port}.db"
        # a key may hold a bounded number of live nonces (max_live_nonces_per_key): the
        # timed phase draws its pre-fetched nonces from several keys
        keys = SQLiteApiKeyStore(db)
        self.keys = [keys.create(f"bench-{i}")[0] for i in range(32)]
        now, kp = time.time(), KeyPair.generate()  # the gateway never decrypts: any key will do
        self.instance_id = kp.instance_id
        SQLiteInstanceRegistry(tmp / "registry.db").upsert(InstanceRecord(
            kp.instance_id, CHUTE, "bench/model", self.miner, "hk", 0, kp.public_b64, (1, 2),
            now, now + 3600, 1.0, receipt_pubkey=_receipt_signer().public_b64))
        env = {**os.environ, "CHUTES_SUBNET_HOME": str(tmp)}
        self.procs = [
            subprocess.Popen([sys.executable, __file__, "--serve-miner", str(self.miner_port)],
                             env=env),
            subprocess.Popen([sys.executable, "-m", "chutes_subnet.gateway", "gateway",
                              "--listen", f"127.0.0.1:{self.gw_port}",
                              "--registry", f"sqlite://{tmp / 'registry.db'}",
                              "--nonces", nonces_url, "--db", str(db),
                              "--nonces-per-instance", "256", "--log-level", "warning",
                              "--workers", str(workers), "--dangerous-unsigned-forwards"],
                             env=env, cwd=str(ROOT), preexec_fn=_pinned),
        ]
        _wait(self.gw + "/health")
        time.sleep(0.3)  # the miner has no health route; it starts faster than the gateway

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=15)


async def _nonces(http: aiohttp.ClientSession, stack: Stack, n: int) -> list[tuple[str, str]]:
    """``n`` fresh ``(api key, nonce)`` pairs, spread over the stack's keys."""
    out: list[tuple[str, str]] = []
    turn = 0
    while len(out) < n:
        key = stack.keys[turn % len(stack.keys)]
        turn += 1
        auth = {"Authorization": f"Bearer {key}"}
        async with http.get(f"{stack.gw}/e2e/instances/{CHUTE}", headers=auth) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"discovery answered HTTP {r.status}: {body}")
        # earlier stacks of this run left their (live) instances in the shared registry
        out += [(key, nonce) for nonce in next(
            i["nonces"] for i in body["instances"] if i["instance_id"] == stack.instance_id)]
    return out[:n]


def _headers(stack: Stack, issued: tuple[str, str]) -> dict[str, str]:
    key, nonce = issued
    return {"Authorization": f"Bearer {key}", "X-Chute-Id": CHUTE,
            "X-Instance-Id": stack.instance_id, "X-E2E-Nonce": nonce, "X-E2E-Stream": "false",
            "X-E2E-Path": "/v1/chat/completions", "X-E2E-Version": "2",
            "Content-Type": "application/octet-stream"}


async def _call(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    async with http.post(url, data=BODY, headers=headers) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process and its live children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            total += _cpu_seconds(int(child))
    return total


async def throughput(stack: Stack, concurrency: int, seconds: float) -> tuple[float, float]:
    """(routed requests/s, gateway CPU microseconds per routed request)."""
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:
        pool = await _nonces(http, stack, int(seconds * 3000) + 500)
        url = stack.gw + "/e2e/invoke"
        for _ in range(50):
            await _call(http, url, _headers(stack, pool.pop()))
        done = 0
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop_at and pool:
                await _call(http, url, _headers(stack, pool.pop()))
                done += 1

        cpu0, t0 = _cpu_seconds(stack.procs[1].pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, _cpu_seconds(stack.procs[1].pid) - cpu0
        return done / wall, cpu / max(done, 1) * 1e6


async def latency(stack: Stack, n: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as http:
        pool = await _nonces(http, stack, n + 20)
        direct, routed = [], []
        for i in range(n + 20):
            h = _headers(stack, pool.pop())
            t0 = time.perf_counter()
            await _call(http, stack.miner + "/e2e/invoke", h)
            t1 = time.perf_counter()
            await _call(http, stack.gw + "/e2e/invoke", h)
            t2 = time.perf_counter()
            if i >= 20:
                direct.append((t1 - t0) * 1e3)
                routed.append((t2 - t1) * 1e3)

    def pct(xs: list[float], q: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]

    return {"direct_p50_ms": statistics.median(direct), "direct_p99_ms": pct(direct, 0.99),
            "routed_p50_ms": statistics.median(routed), "routed_p99_ms": pct(routed, 0.99),
            "added_p50_ms": statistics.median(routed) - statistics.median(direct),
            "added_p99_ms": pct(routed, 0.99) - pct(direct, 0.99)}


def _start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (about 15 s)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--latency-samples", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="gateway worker counts to run, e.g. 1,2")
    ap.add_argument("--baselines", default="relay,nginx",
                    help="baselines measured in the same run: relay, nginx ('' = none)")
    ap.add_argument("--pin-proxy", type=int, default=None, metavar="CPU",
                    help="run the proxy under test (gateway, relay, nginx) on this CPU only")
    ap.add_argument("--serve-miner", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--serve-relay", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_miner:
        _serve_miner(args.serve_miner)
        return 0
    if args.serve_relay:
        _serve_relay(*args.serve_relay)
        return 0
    global _PIN_CPU
    _PIN_CPU = args.pin_proxy
    seconds = 3.0 if args.quick else args.seconds
    samples = 300 if args.quick else args.latency_samples
    results: dict[str, dict[str, float]] = {}
    baselines: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as d:
        tmp = Path(d)
        backends = [("sqlite", f"sqlite://{tmp / 'nonces.db'}")]
        redis = _start_redis(tmp)
        if redis is not None:
            backends.append(("redis", redis[1]))
        try:
            for kind in filter(None, args.baselines.split(",")):
                if kind == "nginx" and _nginx_binary() is None:
                    print("nginx baseline skipped: nginx is not installed "
                          "(apt-get install nginx-light)", file=sys.stderr)
                    continue
                base = Baseline(tmp, kind)
                try:
                    rps, cpu_us = asyncio.run(baseline_throughput(base, args.concurrency,
                                                                  seconds))
                finally:
                    base.stop()
                baselines[kind] = {"rps": rps, "cpu_us_per_req": cpu_us}
            runs = [(f"{name} w{w}", url, w) for w in map(int, args.workers.split(","))
                    for name, url in backends]
            for name, url, workers in runs:
                stack = Stack(tmp, url, workers)
                try:
                    rps, cpu_us = asyncio.run(throughput(stack, args.concurrency, seconds))
                    lat = asyncio.run(latency(stack, samples))
                finally:
                    stack.stop()
                results[name] = {"routed_rps": rps, "gateway_cpu_us_per_req": cpu_us,
                                 "one_core_capacity_rps": 1e6 / cpu_us, **lat}
        finally:
            if redis is not None:
                redis[0].terminate()
                redis[0].wait(timeout=10)
    pin = "" if _PIN_CPU is None else f", proxy pinned to CPU {_PIN_CPU}"
    print(f"\ngateway routing, {os.cpu_count()} cores{pin}, concurrency {args.concurrency}, "
          f"{seconds:.0f} s per backend, 1 KiB sealed body")
    print(f"{'store/workers':<14}{'routed req/s':>14}{'gw CPU/req':>12}{'1-core cap':>12}"
          f"{'direct p50':>12}{'routed p50':>12}{'added p50':>11}{'added p99':>11}")
    for name, r in results.items():
        print(f"{name:<14}{r['routed_rps']:>14.0f}{r['gateway_cpu_us_per_req']:>10.0f}us"
              f"{r['one_core_capacity_rps']:>12.0f}{r['direct_p50_ms']:>10.2f}ms"
              f"{r['routed_p50_ms']:>10.2f}ms{r['added_p50_ms']:>9.2f}ms"
              f"{r['added_p99_ms']:>9.2f}ms")
    print("(gw CPU/req: gateway process CPU per routed request; 1-core cap = 1e6 / that, the\n"
          " rate one dedicated core sustains - robust to other load on a shared machine)")
    ratios: dict[str, float] = {}
    if baselines:
        print("\nbaselines (same miner, same load generator, same run):")
        print(f"{'proxy':<14}{'req/s':>14}{'CPU/req':>12}{'1-core cap':>12}")
        for kind, b in baselines.items():
            print(f"{kind:<14}{b['rps']:>14.0f}{b['cpu_us_per_req']:>10.0f}us"
                  f"{1e6 / b['cpu_us_per_req']:>12.0f}")
        print(f"\n{'gateway run':<14}" + "".join(
            f"{'req/s vs ' + k:>16}{'1-core vs ' + k:>18}" for k in baselines))
        for name, r in results.items():
            cells = ""
            for kind, b in baselines.items():
                rps_ratio = r["routed_rps"] / b["rps"]
                cap_ratio = b["cpu_us_per_req"] / r["gateway_cpu_us_per_req"]
                ratios[f"{name.replace(' ', '_')}_vs_{kind}_rps"] = round(rps_ratio, 3)
                ratios[f"{name.replace(' ', '_')}_vs_{kind}_cap"] = round(cap_ratio, 3)
                cells += f"{rps_ratio:>15.2f}x{cap_ratio:>17.2f}x"
            print(f"{name:<14}{cells}")
    print(json.dumps({"bench": "gateway", "cores": os.cpu_count(), "pinned_cpu": _PIN_CPU,
                      "concurrency": args.concurrency, "seconds": seconds,
                      **{f"{k.replace(' ', '_')}_{m}": round(v, 3) for k, r in results.items()
                         for m, v in r.items()},
                      **{f"baseline_{k}_{m}": round(v, 3) for k, b in baselines.items()
                         for m, v in b.items()},
                      **ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
