"""``chutes-subnet demo``: a whole subnet on this machine, no chain and no GPU needed.

What it runs, all on loopback, and what each step proves:

1. a local chain (SQLite file shared by every process) with a validator and five
   miner hotkeys, each under its own coldkey;
2. five real miner processes (``python -m chutes_subnet.miner.cli``): two honest, and
   three dishonest ones — a DEBUG TD quote, a quote bound to another hotkey, and a
   model that returns wrong tokens. Every miner uses the SIMULATED TEE: it is
   INSECURE and accepted only because the demo's validator runs in development mode;
3. the validator (in this process) runs real rounds: btauth/1-signed attestation
   challenges, verification, encrypted benchmarks checked token for token, EMA
   scores and weights set on the local chain;
4. the gateway (in this process, holding no key material) publishes only the
   instances the validator verified;
5. an OpenAI SDK client with our E2EE transport asks a question through the gateway
   (v2, stream and non-stream) and prints the decrypted answer;
6. the score/weight table, and exactly what the gateway saw of that request.

Every process and port is cleaned up on exit or Ctrl-C. ``--summary-json`` writes
the outcome for scripts and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["add_demo_commands", "run_demo", "DemoOptions", "MINERS"]

#: (name, fault) of the miners the demo starts; None = honest.
MINERS: tuple[tuple[str, str | None], ...] = (
    ("honest-a", None),
    ("honest-b", None),
    ("debug-td", "debug-quote"),
    ("borrowed-key", "foreign-hotkey"),
    ("wrong-tokens", "wrong-tokens"),
)
QUESTION = "Explain end-to-end encryption in one sentence."


@dataclass
class DemoOptions:
    rounds: int = 2
    workdir: str | None = None
    keep: bool = False
    summary_json: str | None = None
    max_tokens: int = 48


@dataclass
class _Miner:
    name: str
    fault: str | None
    hotkey: str
    port: int
    uid: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None


@dataclass
class _Steps:
    total: int
    n: int = 0
    started: float = field(default_factory=time.monotonic)

    def begin(self, text: str) -> float:
        self.n += 1
        print(f"[{self.n}/{self.total}] {text} ...", flush=True)
        return time.monotonic()

    @staticmethod
    def done(t0: float, detail: str = "") -> None:
        extra = f" — {detail}" if detail else ""
        print(f"      done in {time.monotonic() - t0:.1f} s{extra}", flush=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _banner() -> None:
    line = "!" * 78
    print(line)
    print("!! DEMO: every miner uses the SIMULATED TEE. Its evidence is forgeable and")
    print("!! nothing here is confidential. The validator accepts it only because the")
    print("!! demo runs it in development mode (dangerous_accept_simulated_tee=True).")
    print(line, flush=True)


class Demo:
    """One demo run; :meth:`run` returns the summary dict."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="chutes-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.miners: list[_Miner] = []
        self.steps = _Steps(total=7)
        self._cleanups: list[Any] = []

    # --- steps ------------------------------------------------------------------

    def _make_chain(self) -> tuple[Any, Any]:
        from chutes_subnet.chain import LocalChain
        from chutes_subnet.wallets import ensure_dev_wallet, hotkey_ss58

        t0 = self.steps.begin("Creating the local chain and wallets")
        wallets = str(self.workdir / "wallets")
        chain = LocalChain(str(self.workdir / "chain.sqlite"), netuid=1, block_time=0.5,
                           weights_rate_limit=1, create=True)
        vwallet = ensure_dev_wallet("demo-validator", "default", wallets)
        chain.register(hotkey_ss58(vwallet), vwallet.coldkeypub.ss58_address, stake=1000.0,
                       validator_permit=True)
        for name, fault in MINERS:
            w = ensure_dev_wallet(f"demo-{name}", "default", wallets)
            hk = hotkey_ss58(w)
            uid = chain.register(hk, w.coldkeypub.ss58_address)
            self.miners.append(_Miner(name, fault, hk, _free_port(), uid))
        self.steps.done(t0, f"validator + {len(MINERS)} miners registered, netuid 1")
        return chain, vwallet

    def _start_miners(self) -> None:
        t0 = self.steps.begin(f"Starting {len(self.miners)} miner servers (simulated TEE)")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for m in self.miners:
            cmd = [sys.executable, "-m", "chutes_subnet.miner.cli",
                   "--subtensor.network", f"local:{self.workdir / 'chain.sqlite'}",
                   "--netuid", "1", "--wallet.name", f"demo-{m.name}", "--wallet.hotkey", "default",
                   "--wallet.path", str(self.workdir / "wallets"), "--axon.ip", "127.0.0.1",
                   "--axon.port", str(m.port), "--metrics.port", "0", "--tee", "simulated",
                   "--metagraph_refresh", "2",
                   "--shutdown_grace", "2"]
            if m.fault:
                cmd += ["--fault", m.fault]
            m.log_path = self.workdir / f"miner-{m.name}.log"
            log = open(m.log_path, "wb")  # closed with the process
            self._cleanups.append(log.close)
            m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,  # noqa: S603 - argv list from our own settings, no shell
                                      start_new_session=True)
        self._wait_healthy(deadline=time.monotonic() + 90)
        self.steps.done(t0, ", ".join(f"{m.name}:{m.port}" for m in self.miners))

    def _wait_healthy(self, deadline: float) -> None:
        import httpx

        pending = {m.name: m for m in self.miners}
        while pending:
            for name, m in list(pending.items()):
                if m.proc is None or m.proc.poll() is not None:
                    tail = m.log_path.read_text(errors="replace")[-2000:] if m.log_path else ""
                    code = m.proc.returncode if m.proc is not None else None
                    raise RuntimeError(f"miner {name} exited with {code}:\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{m.port}/health", timeout=1).status_code == 200:
                        del pending[name]
                        print(f"      miner {name:<13} up on 127.0.0.1:{m.port}"
                              f"{'  (dishonest: ' + str(m.fault) + ')' if m.fault else ''}",
                              flush=True)
            if time.monotonic() > deadline:
                raise RuntimeError(f"miners not healthy in time: {sorted(pending)}")
            if pending:
                time.sleep(0.2)

    async def _start_gateway(self, vwallet: Any) -> tuple[str, Any, str, str]:
        import uvicorn

        from chutes_subnet.auth import forward_signer
        from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
        from chutes_subnet.gateway.app import create_app
        from chutes_subnet.gateway.config import GatewayConfig
        from chutes_subnet.gateway.usage import MemoryUsageMeter
        from chutes_subnet.httpserver import server_options
        from chutes_subnet.nonces import MemoryNonceStore
        from chutes_subnet.registry import MemoryInstanceRegistry

        t0 = self.steps.begin("Starting the gateway (no key material; routes ciphertext only)")
        registry = MemoryInstanceRegistry()
        keys = MemoryApiKeyStore()
        secret, key = keys.create("demo-user")

        app = create_app(GatewayConfig(), registry=registry, nonce_store=MemoryNonceStore(),
                         keys=keys, usage=MemoryUsageMeter(),
                         forward_signer=forward_signer(vwallet))
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                               log_level="warning", **server_options()))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)

        self._cleanups.append(stop)
        self.steps.done(t0, f"http://127.0.0.1:{port}, API key {key.key_id} created")
        return f"http://127.0.0.1:{port}", registry, secret, key.key_id

    async def _run_rounds(self, chain: Any, vwallet: Any, registry: Any) -> Any:
        from chutes_subnet.attestation.verify.policy import Policy
        from chutes_subnet.attestation.verify.verifier import Verifier
        from chutes_subnet.validator.config import BenchmarkConfig, ValidatorConfig
        from chutes_subnet.validator.neuron import Validator
        from chutes_subnet.validator.state import ValidatorState

        t0 = self.steps.begin(f"Validator: {self.opts.rounds} rounds of attestation + encrypted "
                              "benchmark + weights")
        config = ValidatorConfig(
            dangerous_accept_simulated_tee=True, timeout=20.0, concurrency=8, round_blocks=1,
            poll_interval=0.5,
            benchmark=BenchmarkConfig(prompts_per_miner=2, max_tokens=24, verify_sample=2))
        verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
        validator = Validator(config, chain=chain, wallet=vwallet, verifier=verifier,
                              state=ValidatorState(self.workdir / "validator.sqlite"),
                              registry=registry)
        self._cleanups.append(validator.aclose)
        report = None
        for i in range(self.opts.rounds):
            r0 = time.monotonic()
            report = await validator.run_round()
            ok = sum(1 for r in report.results if r.ok)
            print(f"      round {report.round_index}: {ok}/{len(report.results)} miners passed, "
                  f"weights {'set' if report.weights_result and report.weights_result.success else 'not set'}"
                  f" ({time.monotonic() - r0:.1f} s)", flush=True)
            if i + 1 < self.opts.rounds:
                chain.advance(2)
        self.steps.done(t0)
        return validator, report

    def _ask(self, gateway: str, secret: str) -> dict[str, Any]:
        import httpx
        from openai import OpenAI

        from chutes_subnet.client import ClientPolicy, E2EETransport
        from chutes_subnet.inference import DEFAULT_MODEL_ID

        t0 = self.steps.begin("Client: verifies the instance itself, then OpenAI SDK + E2EE "
                              "transport -> gateway -> miner (v2)")
        # The demo's miners run simulated TEEs: the client must opt in explicitly.
        policy = ClientPolicy.development(dangerous_accept_simulated_tee=True)
        transport = E2EETransport(policy=policy)
        # Any: the SDK's annotations name its own vendored httpx, not the one we pass
        http: Any = httpx.Client(transport=transport, timeout=60)
        client: Any = OpenAI(base_url=f"{gateway}/v1", api_key=secret, http_client=http,
                             max_retries=0)
        messages = [{"role": "user", "content": QUESTION}]
        resp = client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages,
                                              max_tokens=self.opts.max_tokens)
        answer = resp.choices[0].message.content or ""
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages,
                                                        max_tokens=self.opts.max_tokens, stream=True)
            if chunk.choices)
        http.close()
        refused = transport.rejected
        print("      client challenged the instance through the gateway with its own nonce and "
              f"verified it (SIMULATED TEE accepted by dev opt-in); refused: {len(refused)}")
        print(f"      question: {QUESTION}")
        print(f"      answer (decrypted on the client; the tiny demo model babbles): {answer!r}")
        self.steps.done(t0, f"stream == non-stream: {streamed == answer}, "
                            f"usage {resp.usage.prompt_tokens}+{resp.usage.completion_tokens} tokens"
                        if resp.usage else "")
        return {"answer": answer, "stream_matches": streamed == answer,
                "messages": messages}

    async def run(self) -> dict[str, Any]:
        import httpx

        from chutes_subnet.inference import reference_completion
        from chutes_subnet.validator.table import format_score_table

        _banner()
        wall0 = time.monotonic()
        chain, vwallet = self._make_chain()
        self._cleanups.append(chain.close)
        self._start_miners()
        gateway, registry, secret, _key_id = await self._start_gateway(vwallet)
        validator, report = await self._run_rounds(chain, vwallet, registry)
        asked = await asyncio.to_thread(self._ask, gateway, secret)

        t0 = self.steps.begin("Scores, weights, and what the gateway saw")
        rows = validator.score_table()
        print(format_score_table(rows, round_index=report.round_index if report else None))
        weights = chain.get_weights(validator.hotkey)
        async with httpx.AsyncClient(timeout=10) as http:
            seen = (await http.get(f"{gateway}/v1/requests",
                                   headers={"Authorization": f"Bearer {secret}"})).json()
        print("      gateway journal for this API key (its whole view of the traffic):")
        for e in seen["requests"]:
            print(f"        instance {e['instance_id'][:8]}  nonce {e['nonce_prefix']}…  v{e['e2e_version']}"
                  f"  stream={str(e['stream']).lower():<5}  in {e['request_bytes']} B  "
                  f"out {e['response_bytes']} B  usage {e['prompt_tokens']}+{e['completion_tokens']}"
                  f"  status {e['status']}")
        journal_text = json.dumps(seen)
        plaintext_at_gateway = QUESTION in journal_text or (asked["answer"] and asked["answer"] in journal_text)
        self.steps.done(t0)

        expected = await asyncio.to_thread(
            reference_completion, "/v1/chat/completions",
            {"messages": asked["messages"], "max_tokens": self.opts.max_tokens},
            seed=validator.config.benchmark.embedded_seed)
        reasons = {r.uid: r.reason for r in rows}
        summary = {
            "ok": True,
            "wall_time_s": round(time.monotonic() - wall0, 1),
            "answer": asked["answer"],
            "answer_matches_reference": asked["answer"] == expected,
            "stream_matches": asked["stream_matches"],
            "gateway_saw_plaintext": bool(plaintext_at_gateway),
            "gateway_requests": len(seen["requests"]),
            "weights": {m.name: round(weights.get(m.uid, 0.0), 6) for m in self.miners},
            "reasons": {m.name: reasons.get(m.uid) for m in self.miners},
        }
        honest = [n for n, f in MINERS if f is None]
        summary["ok"] = (
            all(summary["weights"][n] > 0 for n in honest)
            and all(summary["weights"][n] == 0 for n, f in MINERS if f is not None)
            and summary["answer_matches_reference"] and not summary["gateway_saw_plaintext"])
        print()
        print("Summary")
        w = summary["weights"]
        shares = ", ".join(f"{n}={w[n]:.3f}" for n in honest)
        print(f"  honest miners' weight:    {sum(w[n] for n in honest):.4f} ({shares})")
        for n, f in MINERS:
            if f is not None:
                print(f"  dishonest {n:<13} weight {w[n]:.3f}  reason: {summary['reasons'][n]}")
        print(f"  answer decrypted by the client and identical to the validator's local recomputation: "
              f"{summary['answer_matches_reference']}")
        print(f"  plaintext seen by the gateway: {'YES (bug!)' if summary['gateway_saw_plaintext'] else 'none'}")
        print(f"  wall time: {summary['wall_time_s']} s   result: {'OK' if summary['ok'] else 'FAILED'}")
        return summary

    async def cleanup(self) -> None:
        for fn in reversed(self._cleanups):
            with contextlib.suppress(Exception):
                res = fn()
                if asyncio.iscoroutine(res):
                    await res
        self._stop_miners()
        if not self.opts.keep and not self.opts.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self.opts.keep:
            print(f"(kept logs and state in {self.workdir})")

    def _stop_miners(self) -> None:
        procs = [m.proc for m in self.miners if m.proc is not None and m.proc.poll() is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


async def _main(opts: DemoOptions) -> dict[str, Any]:
    demo = Demo(opts)
    try:
        return await demo.run()
    finally:
        await demo.cleanup()


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of ``chutes-subnet demo``; exit code 0 only if every check held."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    opts = DemoOptions(rounds=args.rounds, workdir=args.workdir, keep=args.keep,
                       summary_json=args.summary_json)
    try:
        summary = asyncio.run(_main(opts))
    except KeyboardInterrupt:
        print("\ninterrupted; every process and port was cleaned up", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the demo reports any failure in one line
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        summary = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if opts.summary_json:
        Path(opts.summary_json).write_text(json.dumps(summary, indent=2))
    return 0 if summary.get("ok") else 1


def add_demo_commands(subparsers: Any) -> None:
    """Register ``demo`` on the top-level CLI."""
    p = subparsers.add_parser("demo", help="run a whole local subnet (no chain, no GPU) and "
                              "send an encrypted chat through it")
    p.add_argument("--rounds", type=int, default=2, help="validator rounds (default 2)")
    p.add_argument("--workdir", help="keep chain, wallets, state and logs here (default: a temp "
                   "dir removed at exit)")
    p.add_argument("--keep", action="store_true", help="do not delete the temp dir at exit")
    p.add_argument("--summary-json", help="write the outcome as JSON to this file")
    p.set_defaults(func=run_demo)
