#!/usr/bin/env python3
"""Run every documented command path that works on one machine without a GPU, a TD or
a real chain, and every operator mistake of issue 17, as real processes.

Each case asserts the exit code and, for mistakes, that stderr ends with ONE line
``<prog>: error: ...`` naming the problem and the fix, with no traceback (only
``--logging.debug`` prints one). ``tests/ops/test_operator_paths.py`` runs the same
cases under pytest.

    python scripts/check_operator_paths.py [--only SUBSTRING] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NETUID = 1


@dataclass(frozen=True)
class Case:
    """One command line and what it must produce."""

    name: str
    argv: tuple[str, ...]
    code: int                      # expected exit status (0, 1 operator error, 2 usage)
    expect: tuple[str, ...] = ()   # regexes the relevant output must match
    stream: str = "stderr"         # where ``expect`` looks: stderr (errors) or stdout
    one_line_error: bool = True    # nonzero codes: the last stderr line is "<prog>: error: ..."
    traceback: bool = False        # only --logging.debug may print one
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 120.0


@dataclass
class Workspace:
    """Files and processes shared by the cases (a local chain, wallets, a busy port)."""

    root: Path
    chain: str = ""
    wallets: str = ""
    busy_port: int = 0
    free_port: int = 0
    _busy: socket.socket | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT), "CHUTES_SUBNET_HOME": str(self.root / "home"),
                "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "CHUTES_DEBUG": ""}

    def close(self) -> None:
        if self._busy is not None:
            self._busy.close()


def prepare(root: Path) -> Workspace:
    """A local chain with a permitted validator, a permit-less validator and a miner."""
    from chutes_subnet.chain import LocalChain
    from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58

    ws = Workspace(root=root)
    ws.chain = f"local:{root / 'chain.sqlite'}"
    ws.wallets = str(root / "wallets")
    chain = LocalChain(str(root / "chain.sqlite"), netuid=NETUID, block_time=0,
                       weights_rate_limit=0, create=True)
    for name, stake, permit in (("validator", 1000.0, True), ("nopermit", 5.0, False),
                                ("miner", 0.0, False)):
        w = ensure_dev_wallet(name, "default", ws.wallets)
        chain.register(hotkey_ss58(w), coldkey_ss58(w), stake=stake, validator_permit=permit)
    ensure_dev_wallet("stranger", "default", ws.wallets)  # never registered
    chain.close()
    (root / "policy-bad.toml").write_text("version = 1\n[tcb\naccepted_statuses = [\n")
    (root / "config-bad.toml").write_text("netuid = \n")
    (root / "config-unknown.toml").write_text("netuid = 1\nno_such_setting = 3\n")
    (root / "home").mkdir(mode=0o700)
    # a key database of its own for "keys list", so that case does not depend on
    # "keys create" having run first (the test runs cases concurrently)
    from chutes_subnet.gateway.state_stores import open_gateway_stores

    listed = open_gateway_stores(str(root / "listed.db"))
    listed.keys.create("listed-app")
    listed.close()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    ws._busy, ws.busy_port = busy, busy.getsockname()[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ws.free_port = probe.getsockname()[1]
    return ws


def cases(ws: Workspace) -> list[Case]:
    """Every documented path that can run here, then every bad input of issue 17."""
    py = sys.executable
    cs = ("-m", "chutes_subnet.cli")
    miner = (py, "neurons/miner.py", "--wallet.path", ws.wallets, "--netuid", str(NETUID),
             "--subtensor.network", ws.chain, "--axon.ip", "127.0.0.1", "--tee", "simulated",
             "--metagraph_refresh", "30")
    validator = (py, "neurons/validator.py", "--wallet.path", ws.wallets, "--metrics.port", "0",
                 "--gateway.registry", "none", "--dev", "--neuron.round_blocks", "1")
    production = tuple(a for a in validator if a != "--dev")
    on_chain = ("--chain", ws.chain, "--netuid", str(NETUID))
    gateway = (py, *cs, "gateway", "--registry", "memory://", "--nonces", "memory://",
               "--listen", f"127.0.0.1:{ws.free_port}")
    keys_db = str(ws.root / "gateway.db")
    r = str(ws.root)
    return [
        # --- documented paths ------------------------------------------------------
        Case("help: chutes-subnet", (py, *cs, "--help"), 0,
             (r"localchain", r"gateway", r"proxy"), stream="stdout"),
        Case("help: miner", (py, "neurons/miner.py", "--help"), 0,
             (r"--axon\.external_port", r"--config", r"--logging\.json"), stream="stdout"),
        Case("help: validator shows defaults", (py, "neurons/validator.py", "--help"), 0,
             (r"\(default: 25\)", r"--neuron\.wait_for_permit"), stream="stdout"),
        Case("localchain show", (py, *cs, "localchain", "show", "--chain", ws.chain), 0,
             (r"3 neurons",), stream="stdout"),
        Case("keys create", (py, *cs, "keys", "--db", keys_db, "create", "--name", "app",
                             "--json"), 0, (r'"key": "csk_',), stream="stdout"),
        Case("keys list", (py, *cs, "keys", "--db", str(ws.root / "listed.db"), "list"), 0,
             (r"listed-app",), stream="stdout"),
        Case("validator dev round explains its miners",
             (*validator, *on_chain, "--wallet.name", "validator", "--neuron.rounds", "1"), 0,
             (r"round 1 at block", r"uid 2 failed: no_axon")),
        # --- wallets -----------------------------------------------------------------
        Case("miner: wrong wallet name", (*miner, "--wallet.name", "nope"), 1,
             (r"wallet 'nope' not found .*fix --wallet\.name",)),
        Case("miner: wrong wallet name, --logging.debug shows the traceback",
             (*miner, "--wallet.name", "nope", "--logging.debug"), 1,
             (r"wallet 'nope' not found",), traceback=True),
        Case("miner: missing hotkey", (*miner, "--wallet.name", "miner", "--wallet.hotkey", "hk9"),
             1, (r"has no hotkey 'hk9'.*btcli wallet new-hotkey",)),
        Case("validator: missing hotkey",
             (*validator, *on_chain, "--wallet.name", "validator", "--wallet.hotkey", "x"), 1,
             (r"has no hotkey 'x'",)),
        # --- chain -------------------------------------------------------------------
        Case("miner: not registered", (*miner, "--wallet.name", "stranger"), 1,
             (r"not registered on netuid 1.*localchain register",)),
        Case("miner: wrong netuid", (*miner, "--wallet.name", "miner", "--netuid", "9"), 1,
             (r"subnet 9 does not exist.*localchain create-subnet",)),
        Case("miner: mistyped --subtensor.network",
             (*miner, "--wallet.name", "miner", "--subtensor.network", "finny",
              "--allow-insecure-simulated-tee"), 1,
             (r"unknown network or endpoint 'finny'.*Fix --subtensor\.network",)),
        Case("miner: unreachable chain endpoint",
             (*miner, "--wallet.name", "miner", "--subtensor.chain_endpoint", "ws://127.0.0.1:1"),
             1, (r"cannot connect to ws://127\.0\.0\.1:1.*is the node running",)),
        Case("validator: not registered", (*validator, *on_chain, "--wallet.name", "stranger"), 1,
             (r"not registered on netuid 1",)),
        Case("validator: no permit", (*validator, *on_chain, "--wallet.name", "nopermit"), 1,
             (r"has no validator permit on netuid 1.*btcli stake add",)),
        Case("validator: wrong netuid", (*validator, "--chain", ws.chain, "--netuid", "9",
                                         "--wallet.name", "validator"), 1,
             (r"subnet 9 does not exist",)),
        Case("validator: mistyped --subtensor.network",
             (*production, "--subtensor.network", "finny", "--wallet.name", "validator"), 1,
             (r"unknown network or endpoint 'finny'",)),
        Case("validator: simulated TEE refused on a public network",
             (*validator, "--subtensor.network", "finney", "--wallet.name", "validator"), 2,
             (r"refusing --dangerous\.accept_simulated_tee on network 'finney'",)),
        Case("validator: unreachable chain endpoint",
             (*validator, "--subtensor.chain_endpoint", "ws://127.0.0.1:1",
              "--wallet.name", "validator"), 1, (r"cannot connect to ws://127\.0\.0\.1:1",)),
        # --- files -------------------------------------------------------------------
        Case("validator: missing policy file",
             (*validator, *on_chain, "--wallet.name", "validator", "--policy.path",
              f"{r}/nope.toml"), 1, (r"cannot read policy file .*nope\.toml",)),
        Case("validator: policy TOML syntax error",
             (*validator, *on_chain, "--wallet.name", "validator", "--policy.path",
              f"{r}/policy-bad.toml"), 1, (r"policy-bad\.toml.*line",)),
        Case("validator: config TOML syntax error",
             (*validator, "--config", f"{r}/config-bad.toml"), 1,
             (r"config file .*config-bad\.toml: TOML syntax error",)),
        Case("miner: config file with an unknown setting",
             (*miner, "--config", f"{r}/config-unknown.toml"), 1,
             (r"unknown setting 'no_such_setting'",)),
        Case("miner: missing config file", (*miner, "--config", f"{r}/none.toml"), 1,
             (r"config file .*none\.toml not found",)),
        # --- ports, URLs, TEE ---------------------------------------------------------
        Case("miner: port in use", (*miner, "--wallet.name", "miner", "--axon.port",
                                    str(ws.busy_port)), 1,
             (rf"port {ws.busy_port} on 127\.0\.0\.1 is already in use.*--axon\.port",)),
        Case("miner: --tee tdx outside a TD", (*miner[:-4], "--tee", "tdx", "--wallet.name",
                                               "miner"), 1, (r"run the miner with --tee simulated",)),
        Case("miner: non-loopback upstream",
             (*miner, "--wallet.name", "miner", "--backend", "openai", "--backend.url",
              "http://10.1.2.3:8000"), 1, (r"--backend\.dangerous_allow_non_loopback",)),
        Case("gateway: no signer", gateway, 1,
             (r"no --wallet\.name.*401.*--dangerous-unsigned-forwards",)),
        Case("gateway: bad registry URL",
             (*gateway[:4], "--registry", "postgres:/x", "--nonces", "memory://",
              "--dangerous-unsigned-forwards"), 1, (r"registry URL 'postgres:/x' is not supported",)),
        Case("gateway: port in use",
             (*gateway[:-2], "--listen", f"127.0.0.1:{ws.busy_port}",
              "--dangerous-unsigned-forwards"), 1, (rf"port {ws.busy_port} .*in use.*--listen",)),
        Case("validator: gateway port in use",
             (*validator, *on_chain, "--wallet.name", "validator", "--gateway.port",
              str(ws.busy_port), "--gateway.registry", "memory://"), 1,
             (rf"port {ws.busy_port} .*in use.*--gateway\.port",)),
        Case("proxy: --upstream without scheme",
             (py, *cs, "proxy", "--upstream", "gateway.example:8000"), 2,
             (r"is not a URL.*https://gateway\.example:8000",)),
        Case("proxy: unreachable gateway",
             (py, *cs, "proxy", "--upstream", "http://127.0.0.1:1", "--dangerous-trust-gateway",
              "--listen",
              f"127.0.0.1:{ws.free_port}"), 1,
             (r"gateway http://127\.0\.0\.1:1 is unreachable.*--upstream",)),
        Case("scores: no state yet", (py, *cs, "scores", "--state.path", f"{r}/none.sqlite"), 1,
             (r"no validator state at .*none\.sqlite",)),
    ]


def run_case(case: Case, ws: Workspace) -> list[str]:
    """Run one case; the list of problems (empty = pass)."""
    proc = subprocess.run(case.argv, cwd=ROOT, env={**ws.env(), **case.env}, capture_output=True,
                          text=True, timeout=case.timeout, check=False)
    out = proc.stdout if case.stream == "stdout" else proc.stderr
    problems = []
    if proc.returncode != case.code:
        problems.append(f"exit {proc.returncode}, expected {case.code}")
    for pattern in case.expect:
        if not re.search(pattern, out, re.DOTALL):
            problems.append(f"{case.stream} does not match {pattern!r}")
    if ("Traceback" in proc.stderr) != case.traceback:
        problems.append("traceback printed" if not case.traceback else "no traceback")
    if "Failed to initialize NumPy" in proc.stderr or "UserWarning" in proc.stderr:
        problems.append("a Python warning was printed")
    if case.code != 0 and case.one_line_error:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if ": error: " in line]
        if len(errors) != 1 or not lines or lines[-1] != errors[0]:
            problems.append(f"expected one final 'error:' line, got {errors or lines[-3:]}")
    if problems:
        problems.append("stderr tail: " + proc.stderr[-600:].replace("\n", " | "))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run cases whose name contains this")
    parser.add_argument("--keep", default=None, help="workspace directory to keep")
    args = parser.parse_args(argv)
    root = Path(args.keep or tempfile.mkdtemp(prefix="chutes-operator-paths-"))
    root.mkdir(parents=True, exist_ok=True)
    ws = prepare(root)
    failed = 0
    try:
        for case in cases(ws):
            if args.only not in case.name:
                continue
            started = time.monotonic()
            problems = run_case(case, ws)
            failed += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {time.monotonic() - started:5.1f}s  "
                  f"{case.name}", flush=True)
            for p in problems:
                print(f"       {p}")
    finally:
        ws.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"check": "operator_paths", "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
