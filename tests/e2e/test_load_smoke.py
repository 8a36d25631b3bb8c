"""CI-sized run of ``bench/load.py``: 200 encrypted requests from 20 concurrent clients
through the gateway process to 3 miner processes (mixed stream/JSON, v1/v2).

The full 10,000-request run is ``python bench/load.py`` (figures in
docs/reliability.md); this keeps the same code path green on every commit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUESTS, CLIENTS = 200, 20


def test_load_smoke_every_request_answered_exactly_once(tmp_path):
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "load.py"), "--requests", str(REQUESTS),
         "--clients", str(CLIENTS), "--verify-every", "10", "--json-out", str(out)],
        check=False, capture_output=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout.decode()[-3000:] + proc.stderr.decode()[-3000:]
    r = json.loads(out.read_text())
    # the last stdout line is the same JSON (the bench contract)
    assert json.loads(proc.stdout.decode().strip().splitlines()[-1]) == r

    assert r["requests"] == REQUESTS and r["clients"] == CLIENTS and r["miners"] == 3
    assert r["mix"] == {"json_v1": 50, "json_v2": 50, "stream_v1": 50, "stream_v2": 50}
    assert r["completed"] == REQUESTS, r["failed"]
    assert r["failed"] == {}
    assert r["lost"] == 0 and r["duplicated"] == 0
    # each answer executed once at a miner and metered once by the gateway
    assert r["miner_executions"] == REQUESTS
    assert r["gateway_metered_requests"] == REQUESTS
    assert r["nonce_replays_at_miners"] == 0
    # sampled answers equal the model recomputed locally for that tag's own prompt
    assert r["answers_checked"] == REQUESTS // 10 and r["answers_wrong"] == 0
    assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert all(r["processes_alive_at_end"].values())
    # bounded memory: 200 requests must not grow a server by more than a few MiB
    for name in ("m0", "m1", "m2", "gateway"):
        assert r["rss_growth_kib"][name] < 32 * 1024, (name, r["rss_growth_kib"])
