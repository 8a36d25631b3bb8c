"""The miner CLI and runner: flags/env, refusals, and a real process on a LocalChain file
(axon published, attest signed by a registered validator, graceful shutdown on SIGTERM
finishing an in-flight stream)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chutes_subnet.auth import sign_headers
from chutes_subnet.chain import LocalChain
from chutes_subnet.e2ee import RequestContext, v2
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.miner import MinerConfig
from chutes_subnet.miner.cli import build_parser, config_from_args, env_name, is_local_chain
from chutes_subnet.sse import SSEParser
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from chutes_subnet.wire.call import StreamDecoder
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_flags_map_to_config_and_env_vars_are_read(monkeypatch) -> None:
    monkeypatch.setenv("CHUTES_MINER_AXON_PORT", "9999")
    monkeypatch.setenv("CHUTES_MINER_MAX_CONCURRENCY", "7")
    args = build_parser().parse_args(["--tee", "simulated", "--subtensor.network",
                                      "local:/tmp/x.sqlite", "--max_concurrency", "2"])
    cfg = config_from_args(args)
    assert cfg.port == 9999 and cfg.max_concurrency == 2  # flag beats env
    assert cfg.tee == "simulated" and cfg.invoke_auth == "validator" and cfg.serve_axon
    assert env_name("--wallet.hotkey") == "CHUTES_MINER_WALLET_HOTKEY"


def test_help_documents_every_flag_with_its_env_var() -> None:
    text = build_parser().format_help()
    for flag in ("--netuid", "--wallet.name", "--wallet.hotkey", "--wallet.path",
                 "--subtensor.network", "--subtensor.chain_endpoint", "--axon.port",
                 "--axon.external_ip", "--backend", "--backend.url", "--tee",
                 "--logging.debug", "--allow-insecure-simulated-tee"):
        assert flag in text and env_name(flag) in text.replace("\n", " ").replace(
            "                        ", ""), flag


@pytest.mark.parametrize("spec,local", [("local:/tmp/c.sqlite", True), ("local", True),
                                        ("ws://127.0.0.1:9944", True), ("finney", False),
                                        ("test", False), ("wss://entrypoint.example:443", False)])
def test_local_chain_detection(spec: str, local: bool) -> None:
    assert is_local_chain(spec) is local


def test_simulated_tee_is_refused_on_a_public_network(monkeypatch) -> None:
    args = build_parser().parse_args(["--tee", "simulated", "--subtensor.network", "finney"])
    with pytest.raises(SystemExit, match="refusing --tee simulated"):
        config_from_args(args)
    args = build_parser().parse_args(["--tee", "simulated", "--subtensor.network", "finney",
                                      "--allow-insecure-simulated-tee"])
    assert config_from_args(args).tee == "simulated"
    monkeypatch.setenv("CHUTES_MINER_TEE", "sgx")
    with pytest.raises(SystemExit, match="CHUTES_MINER_TEE"):
        build_parser()


@pytest.mark.parametrize("via_env", [False, True])
def test_a_chosen_instance_id_is_refused_in_one_line(monkeypatch, via_env: bool) -> None:
    argv = ["--tee", "simulated", "--subtensor.network", "local"]
    if via_env:
        monkeypatch.setenv("CHUTES_MINER_INSTANCE_ID", "copied-from-someone")
    else:
        argv += ["--instance_id", "copied-from-someone"]
    with pytest.raises(SystemExit) as exc:
        config_from_args(build_parser().parse_args(argv))
    message = str(exc.value.code)
    assert "\n" not in message and message.startswith("--instance_id is not accepted")
    assert "derived from the instance's attested E2EE key" in message
    assert "--instance_id" not in build_parser().format_help()


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        MinerConfig(max_concurrency=0)
    with pytest.raises(ValueError):
        MinerConfig(invoke_auth="maybe")
    with pytest.raises(ValueError):
        MinerConfig(max_body_bytes=10**9)
    assert MinerConfig(model_id="a/b").chute_id == MinerConfig(model_id="a/b").chute_id
    assert MinerConfig(host="10.0.0.2").advertised_ip == "10.0.0.2"


@pytest.mark.slow
def test_miner_process_publishes_attests_and_drains_on_sigterm(tmp_path: Path) -> None:
    wallets = str(tmp_path / "wallets")
    miner = ensure_dev_wallet("miner", "hot", wallets)
    validator = ensure_dev_wallet("validator", "hot", wallets)
    chain_path = str(tmp_path / "chain.sqlite")
    chain = LocalChain(chain_path, netuid=3, create=True)
    chain.register(hotkey_ss58(miner), coldkey_ss58(miner))
    chain.register(hotkey_ss58(validator), coldkey_ss58(validator), stake=100.0,
                   validator_permit=True)
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "CHUTES_MINER_WALLET_PATH": wallets, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "neurons" / "miner.py"), "--netuid", "3",
         "--wallet.name", "miner", "--wallet.hotkey", "hot",
         "--subtensor.network", f"local:{chain_path}", "--axon.ip", "127.0.0.1",
         "--axon.port", str(port), "--tee", "simulated", "--metrics.port", str(metrics_port),
         "--shutdown_grace", "20"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(url + "/health", timeout=1).json()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "miner did not start"
                time.sleep(0.2)
        assert health["hotkey"] == hotkey_ss58(miner)
        # Prometheus on the private metrics port only, not on the public axon port
        assert httpx.get(url + "/metrics", timeout=5).status_code == 404
        assert "chutes_miner_in_flight" in httpx.get(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        published = asyncio.run(chain.metagraph()).by_hotkey(hotkey_ss58(miner))
        assert published is not None and published.axon == f"127.0.0.1:{port}"

        body = json.dumps({"nonce": "11" * 32}).encode()
        headers = sign_headers(validator, method="POST", path="/attest", body=body,
                               receiver_ss58=hotkey_ss58(miner))
        assert httpx.post(url + "/attest", content=body, headers=headers).status_code == 200

        # a long stream, then SIGTERM while it runs: it must still end with its final frame
        pk = base64.b64decode(health_pubkey(url, hotkey_ss58(miner), validator))
        assert health["instance_id"] == instance_id_for_key(pk)  # named by its key
        chute, path, nonce = health["chute_id"], "/v1/completions", "ab" * 16
        blob, session = v2.seal_request(pk, RequestContext(chute, health["instance_id"], nonce, path, True),
                                        {"prompt": "hi", "max_tokens": 1500})
        h = {"X-Chute-Id": chute, "X-Instance-Id": health["instance_id"], "X-E2E-Nonce": nonce,
             "X-E2E-Stream": "true", "X-E2E-Path": path, "X-E2E-Version": "2"}
        h.update(sign_headers(validator, method="POST", path="/e2e/invoke", body=blob,
                              receiver_ss58=hotkey_ss58(miner)))
        raw = b""
        with httpx.stream("POST", url + "/e2e/invoke", content=blob, headers=h,
                          timeout=60) as r:
            assert r.status_code == 200
            for piece in r.iter_bytes():
                if not raw:
                    proc.send_signal(signal.SIGTERM)
                raw += piece
        decoder = StreamDecoder(2, session)
        plain = decoder.feed(raw) + decoder.finish()  # raises if truncated
        events = SSEParser().feed(plain)
        assert events[-1] == "[DONE]" and len(events) > 1000
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        output = proc.stdout.read() if proc.stdout else ""
        assert f"miner instance {health['instance_id']} stopped" in output
        assert "published axon" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def health_pubkey(url: str, miner_hotkey: str, validator) -> str:
    """The instance's e2e public key, learned the way a validator does: via /attest."""
    body = json.dumps({"nonce": "22" * 32}).encode()
    headers = sign_headers(validator, method="POST", path="/attest", body=body,
                           receiver_ss58=miner_hotkey)
    return httpx.post(url + "/attest", content=body, headers=headers).json()["e2e_pubkey"]
