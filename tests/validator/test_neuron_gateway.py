"""The validator neuron as operators run it: a subprocess with its in-process gateway
and metrics server. After one round, a client reaches the honest (attested) miner
through the gateway with v2 E2EE, never the one with a DEBUG quote; SIGTERM stops it
cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chutes_subnet.client import E2EETransport
from chutes_subnet.gateway.api_keys import SQLiteApiKeyStore
from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED, reference_completion
from chutes_subnet.wire.protocol import chute_id_for_model
from tests import validator_fixtures as vf
from tests.servers import free_port

# slow: runs the validator neuron as a process (about 9 s on 2 busy cores)
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "validator exited early"
        try:
            resp = httpx.get(url, timeout=2)
            if resp.status_code == 200:
                return resp
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_gateway_in_validator_serves_only_attested_miners(tmp_path):
    with vf.local_subnet(tmp_path, {"honest": None, "debug": "debug-quote"},
                         block_time=0.2) as subnet:
        db = tmp_path / "gateway.db"
        keys = SQLiteApiKeyStore(db)
        secret, _ = keys.create("test")
        keys.close()
        gw_port, metrics_port = free_port(), free_port()
        cmd = [sys.executable, str(REPO / "neurons" / "validator.py"),
               "--chain", f"local:{subnet.chain_path}", "--netuid", "7",
               "--wallet.path", str(tmp_path / "wallets"), "--wallet.name", "validator",
               "--state.path", str(tmp_path / "state.sqlite"), "--dev",
               "--neuron.timeout", "5", "--neuron.prompts", "1", "--neuron.max_tokens", "8",
               "--neuron.round_blocks", "1000", "--neuron.poll_interval", "0.2",
               "--metrics.port", str(metrics_port), "--gateway.port", str(gw_port),
               "--gateway.host", "127.0.0.1", "--gateway.db", str(db),
               "--gateway.registry", f"sqlite://{tmp_path / 'registry.db'}",
               "--gateway.nonces", "memory://", "--collateral.url", ""]
        env = dict(os.environ, CHUTES_SUBNET_HOME=str(tmp_path / "home"))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            metrics = f"http://127.0.0.1:{metrics_port}"
            deadline = time.monotonic() + 60
            while "chutes_validator_rounds_total 1.0" not in _wait_http(
                    metrics + "/metrics", proc).text:
                assert time.monotonic() < deadline, "no round completed"
                time.sleep(0.2)
            scores = {row["uid"]: row for row in _wait_http(metrics + "/scores", proc).json()}
            honest, debug = subnet.by_name("honest"), subnet.by_name("debug")
            assert scores[honest.uid]["weight"] == 1.0
            assert scores[debug.uid]["reason"] == "attestation:debug_td"

            gateway = f"http://127.0.0.1:{gw_port}"
            auth = {"Authorization": f"Bearer {secret}"}
            listed = httpx.get(f"{gateway}/e2e/instances/{chute_id_for_model(DEFAULT_MODEL_ID)}",
                               headers=auth, timeout=5).json()
            assert len(listed["instances"]) == 1            # the DEBUG-quote miner is not there
            body = {"model": DEFAULT_MODEL_ID, "max_tokens": 10,
                    "messages": [{"role": "user", "content": "route me"}]}
            with httpx.Client(transport=E2EETransport(secret, verify="gateway"), timeout=30) as client:
                resp = client.post(f"{gateway}/v1/chat/completions", json=body)
            assert resp.status_code == 200, resp.text
            text = resp.json()["choices"][0]["message"]["content"]
            assert text == reference_completion("/v1/chat/completions", body, seed=DEFAULT_SEED)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert code == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
