"""``bench/load.py`` as a test: encrypted requests from concurrent clients through the
gateway process to 3 miner processes (mixed stream/JSON, v1/v2).

``smoke`` (200 requests, 20 clients; ``slow``, runs by default) keeps the code path green
on every commit; ``full`` (10,000 requests, 100 clients, the figures in
docs/reliability.md; ``load``, run with ``pytest -m load``) takes minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERIFY_EVERY = 10


@pytest.mark.parametrize("requests,clients,timeout", [
    pytest.param(200, 20, 240, marks=pytest.mark.slow, id="smoke"),
    pytest.param(10_000, 100, 3600, marks=pytest.mark.load, id="full"),
])
def test_load_every_request_answered_exactly_once(tmp_path, requests, clients, timeout):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--requests", str(requests),
         "--clients", str(clients), "--verify-every", str(VERIFY_EVERY), "--json-out", str(out)],
        check=False, capture_output=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:] + proc.stderr.decode()[-3000:]
    r = json.loads(out.read_text())
    # the last stdout line is the same JSON (the bench contract)
    assert json.loads(proc.stdout.decode().strip().splitlines()[-1]) == r

    assert r["requests"] == requests and r["clients"] == clients and r["miners"] == 3
    quarter = requests // 4
    assert r["mix"] == {"json_v1": quarter, "json_v2": quarter, "stream_v1": quarter,
                        "stream_v2": quarter}
    assert r["completed"] == requests, r["failed"]
    assert r["failed"] == {}
    assert r["lost"] == 0 and r["duplicated"] == 0
    # each answer executed once at a miner and metered once by the gateway
    assert r["miner_executions"] == requests
    assert r["gateway_metered_requests"] == requests
    assert r["nonce_replays_at_miners"] == 0
    # sampled answers equal the model recomputed locally for that tag's own prompt
    assert r["answers_checked"] == requests // VERIFY_EVERY and r["answers_wrong"] == 0
    assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert all(r["processes_alive_at_end"].values())
    # bounded memory: no server grows by more than a few MiB (10,000 requests: +7 MiB)
    for name in ("m0", "m1", "m2", "gateway"):
        assert r["rss_growth_kib"][name] < 32 * 1024, (name, r["rss_growth_kib"])
