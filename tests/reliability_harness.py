"""A whole subnet on loopback made of real processes, for load and fault tests.

What it starts, each piece real:

* a :class:`~chutes_subnet.chain.LocalChain` file with one permitted validator and
  one hotkey per miner;
* miner *processes* (``python -m chutes_subnet.miner.cli``, simulated TEE, embedded
  model), so each can be SIGKILLed, SIGSTOPped and measured (RSS);
* optionally the gateway as a process (``python -m chutes_subnet.gateway gateway``)
  on SQLite stores, with an API key made by its own ``keys create`` command;
* :meth:`LoopbackSubnet.publish` runs one real validator round (btauth/1 attestation
  challenge, verification in development mode, encrypted benchmark) that writes the
  verified instances into a gateway registry.

Used by ``tests/e2e/test_load.py``, ``tests/faults/`` and ``bench/load.py``.
Every process is stopped (by its own pid) when the context exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from chutes_subnet.chain import LocalChain
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from tests.servers import free_port

__all__ = [
    "GatewayProcess",
    "LoopbackSubnet",
    "MinerProcess",
    "miner_counter",
    "rss_kib",
    "wait_until",
]


NETUID = 1
ROOT = Path(__file__).resolve().parents[1]


def rss_kib(pid: int) -> int:
    """Resident set size of a live process in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_until(predicate: Any, deadline_s: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate()`` until it returns a truthy value or the deadline passes."""
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(interval)


def _healthy(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + "/health", timeout=1.0).status_code == 200
    return False


def miner_counter(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's ``_total`` samples whose labels include ``labels``."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name + "_total"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class _Proc:
    name: str
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def wait_healthy(self, deadline_s: float = 60.0) -> None:
        def ok() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            return _healthy(self.url)

        wait_until(ok, deadline_s, f"{self.name} /health")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.alive():
            self.signal(signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGCONT (in case it was stopped), SIGTERM, then SIGKILL after 10 s."""
        if not self.alive():
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class MinerProcess(_Proc):
    fault: str | None = None
    hotkey: str = ""
    uid: int = -1

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5.0).text


@dataclass
class GatewayProcess(_Proc):
    api_key: str = ""
    key_id: str = ""
    #: ``api_key`` first, then the ``extra_keys`` asked of :meth:`LoopbackSubnet.start_gateway`
    api_keys: list[str] = field(default_factory=list)


@dataclass
class LoopbackSubnet:
    """Chain, wallets and processes under ``workdir`` (see the module docstring)."""

    workdir: Path
    miners: list[MinerProcess] = field(default_factory=list)
    gateway: GatewayProcess | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.wallets = str(self.workdir / "wallets")
        self.chain_path = self.workdir / "chain.sqlite"
        self.chain = LocalChain(str(self.chain_path), netuid=NETUID, block_time=0, create=True,
                                weights_rate_limit=0)
        self.validator_wallet = ensure_dev_wallet("validator", "default", self.wallets)
        self.validator_hotkey = hotkey_ss58(self.validator_wallet)
        self.chain.register(self.validator_hotkey, coldkey_ss58(self.validator_wallet),
                            stake=1000.0, validator_permit=True)
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1",
                     "CHUTES_SUBNET_HOME": str(self.workdir / "home")}

    # --- miners -------------------------------------------------------------------

    def add_miner(self, name: str, *, fault: str | None = None, invoke_auth: str = "validator",
                  max_concurrency: int = 8, request_timeout: float = 30.0) -> MinerProcess:
        """Register a hotkey and spawn its miner process (call :meth:`wait_miners` after)."""
        wallet = ensure_dev_wallet(f"miner-{name}", "default", self.wallets)
        hk = hotkey_ss58(wallet)
        uid = self.chain.register(hk, coldkey_ss58(wallet))
        m = MinerProcess(name=name, port=free_port(), log_path=self.workdir / f"miner-{name}.log",
                         fault=fault, hotkey=hk, uid=uid)
        cmd = [sys.executable, "-m", "chutes_subnet.miner.cli",
               "--subtensor.network", f"local:{self.chain_path}", "--netuid", str(NETUID),
               "--wallet.name", f"miner-{name}", "--wallet.hotkey", "default",
               "--wallet.path", self.wallets, "--axon.ip", "127.0.0.1",
               "--axon.port", str(m.port), "--metrics.port", "0", "--tee", "simulated",
               "--metagraph_refresh", "1",
               "--shutdown_grace", "1", "--invoke_auth", invoke_auth,
               "--max_concurrency", str(max_concurrency),
               "--request_timeout", str(request_timeout)]
        if fault:
            cmd += ["--fault", fault]
        with open(m.log_path, "wb") as log:
            m.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                                      cwd=ROOT)
        self.miners.append(m)
        return m

    def wait_miners(self, deadline_s: float = 90.0) -> None:
        """Wait until every miner answers ``/health`` and its validator is in the metagraph."""
        for m in self.miners:
            m.wait_healthy(deadline_s)

    def miner(self, name: str) -> MinerProcess:
        return next(m for m in self.miners if m.name == name)

    # --- validator ------------------------------------------------------------------

    def validator(self, registry: Any = None, *, timeout: float = 20.0, max_tokens: int = 4,
                  state_path: Path | None = None) -> Any:
        """A real :class:`Validator` in development mode (accepts the simulated TEE)."""
        from chutes_subnet.attestation.verify.policy import Policy
        from chutes_subnet.attestation.verify.verifier import Verifier
        from chutes_subnet.validator import (
            BenchmarkConfig,
            Validator,
            ValidatorConfig,
            ValidatorState,
        )

        config = ValidatorConfig(
            dangerous_accept_simulated_tee=True, timeout=timeout, concurrency=8,
            rechallenge_probability=0.0,
            benchmark=BenchmarkConfig(prompts_per_miner=1, max_tokens=max_tokens,
                                      verify_sample=1))
        verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
        state = ValidatorState(state_path or ":memory:")
        return Validator(config, chain=self.chain, wallet=self.validator_wallet,
                         verifier=verifier, state=state, registry=registry)

    async def publish(self, registry: Any) -> Any:
        """One validator round that writes the verified instances into ``registry``."""
        validator = self.validator(registry)
        try:
            report = await validator.run_round()
        finally:
            await validator.aclose()
        return report

    # --- gateway ------------------------------------------------------------------

    def gateway_app(self, registry: Any, nonce_store: Any, config: Any = None,
                    *, sign: bool = True) -> tuple[Any, str]:
        """An in-process gateway app and an API key; it signs forwards as the validator."""
        from chutes_subnet.auth import sign_headers
        from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
        from chutes_subnet.gateway.app import create_app
        from chutes_subnet.gateway.config import GatewayConfig
        from chutes_subnet.gateway.usage import MemoryUsageMeter

        keys = MemoryApiKeyStore()
        secret, _ = keys.create("faults")
        wallet = self.validator_wallet

        def signer(method: str, path: str, body: bytes, receiver: str) -> dict[str, str]:
            return sign_headers(wallet, method=method, path=path, body=body,
                                receiver_ss58=receiver)

        app = create_app(config or GatewayConfig(), registry=registry, nonce_store=nonce_store,
                         keys=keys, usage=MemoryUsageMeter(),
                         forward_signer=signer if sign else None)
        return app, secret

    # --- gateway process ------------------------------------------------------------

    def start_gateway(self, *, nonces: str | None = None, nonces_per_instance: int = 32,
                      sign: bool = True, deadline_s: float = 60.0,
                      extra_keys: int = 0) -> GatewayProcess:
        """``python -m chutes_subnet.gateway gateway`` on this subnet's SQLite stores;
        with ``sign`` it signs every forward with the validator hotkey (btauth/1).
        ``extra_keys`` more API keys are created (one per simulated user: each key holds
        at most ``max_live_nonces_per_key`` live nonces)."""
        db = self.workdir / "gateway.db"
        created = subprocess.run(
            [sys.executable, "-m", "chutes_subnet.gateway", "keys", "--db", str(db), "create",
             "--name", "load", "--json"], capture_output=True, env=self._env, cwd=ROOT,
            timeout=60, check=True)
        key = json.loads(created.stdout)
        gw = GatewayProcess(name="gateway", port=free_port(),
                            log_path=self.workdir / "gateway.log", api_key=key["key"],
                            key_id=key["key_id"])
        gw.api_keys = [key["key"], *self._more_keys(db, extra_keys)]
        cmd = [sys.executable, "-m", "chutes_subnet.gateway", "gateway",
               "--listen", f"127.0.0.1:{gw.port}", "--registry", f"sqlite://{self.registry_path}",
               "--nonces", nonces or f"sqlite://{self.workdir / 'nonces.db'}", "--db", str(db),
               "--nonces-per-instance", str(nonces_per_instance), "--log-level", "warning"]
        if sign:
            cmd += ["--wallet.name", "validator", "--wallet.hotkey", "default",
                    "--wallet.path", self.wallets]
        else:
            cmd += ["--dangerous-unsigned-forwards"]
        with open(gw.log_path, "wb") as log:
            gw.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env,
                                       cwd=ROOT)
        self.gateway = gw
        gw.wait_healthy(deadline_s)
        return gw

    @staticmethod
    def _more_keys(db: Path, n: int) -> list[str]:
        """``n`` API keys written straight into the gateway's key database (fast)."""
        if n <= 0:
            return []
        from chutes_subnet.gateway.api_keys import SQLiteApiKeyStore

        store = SQLiteApiKeyStore(db)
        try:
            return [store.create(f"load-{i}")[0] for i in range(n)]
        finally:
            store.close()

    @property
    def registry_path(self) -> Path:
        return self.workdir / "registry.db"

    # --- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        procs: list[_Proc] = [*self.miners, *([self.gateway] if self.gateway else [])]
        for p in procs:
            p.stop()
        self.chain.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
