"""The miner app as a whole on loopback: nothing it logs holds plaintext, and the development
plaintext endpoint is off unless asked for."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from chutes_subnet.inference import DEFAULT_SEED, reference_completion
from chutes_subnet.miner import MinerConfig
from tests.miner_fixtures import (
    CHAT,
    SECRET_PROMPT,
    Env,
    open_json,
    payload,
    sealed,
    start_miner,
    stream_text,
)


def test_server_never_logs_plaintext(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answers = []
    for version in (1, 2):
        for stream in (False, True):
            headers, blob, session = sealed(env.inst, version=version, stream=stream,
                                            body=payload(max_tokens=24))
            r = env.post("/e2e/invoke", blob, headers)
            assert r.status_code == 200
            answers.append(stream_text(version, session, r.content) if stream
                           else open_json(version, session, r.content)
                           ["choices"][0]["message"]["content"])
    bad = {"model": "m", "messages": [{"role": "nobody", "content": SECRET_PROMPT}]}
    headers, blob, _ = sealed(env.inst, body=bad)
    assert env.post("/e2e/invoke", blob, headers).status_code == 400
    assert len(answers[0]) == 24 and len(set(answers)) == 1
    records = [r for r in caplog.records if r.name.startswith("chutes_subnet.miner")]
    assert len(records) >= 5  # the miner did log these requests
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert SECRET_PROMPT not in logged and "zebra" not in logged
    assert answers[0] not in logged


def test_plaintext_endpoint_is_off_by_default_and_same_answer_when_on(env: Env,
                                                                      wallets) -> None:
    body = json.dumps(payload()).encode()
    headers, _, _ = sealed(env.inst)
    assert env.post("/dangerous/plaintext/invoke", body, headers).status_code == 404
    cfg = MinerConfig(tee="simulated", invoke_auth="none",
                      dangerous_plaintext_endpoint=True)
    server, inst = start_miner(cfg, wallets, None)
    try:
        h, _, _ = sealed(inst)
        r = httpx.post(server.url + "/dangerous/plaintext/invoke", content=body, headers=h)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == \
            reference_completion(CHAT, payload(), seed=DEFAULT_SEED)
    finally:
        server.stop()
