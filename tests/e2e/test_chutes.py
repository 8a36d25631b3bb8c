"""Chutes as deployments, end to end on loopback (issue 19's "must show").

Two chutes are deployed through the gateway's API (A public, B private to one friend
key), three real miners serve A, B and a model nobody deployed. Real validator rounds
attest and benchmark them; real requests through the gateway make the demand (a fake
clock stands in for minutes of traffic). As demand moves from A to B, the published
targets, the miners' round scores (supply multiplier) and the miner-side scaler's
plan follow; B stays invisible to other keys; the unregistered model is refused.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from chutes_subnet.auth import forward_signer
from chutes_subnet.chutes_cli import add_chutes_commands
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.chute_api import chute_targets
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.inference import make_backend
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.registry.chute_store import SQLChuteStore
from chutes_subnet.registry.demand import DemandMeter
from chutes_subnet.stores.database import SQLiteDatabase
from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
from chutes_subnet.wire.call import SealTarget, seal_call
from chutes_subnet.wire.protocol import chute_id_for_model
from tests import validator_fixtures as vf
from tests.chute_fixtures import chute_dict
from tests.servers import UvicornThread

A, B, ROGUE = "acme/chute-a", "acme/chute-b", "rogue/made-up-model"
CA, CB = chute_id_for_model(A), chute_id_for_model(B)


class Clock:
    def __init__(self) -> None:
        self.t = 10_000.0

    def __call__(self) -> float:
        return self.t


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _embedded(model: str):
    return model, lambda: make_backend("embedded", model_id=model)


@pytest.fixture
def subnet(tmp_path):
    with vf.local_subnet(tmp_path, {"a1": None, "b1": None, "rogue": None},
                         backends={"a1": _embedded(A), "b1": _embedded(B),
                                   "rogue": _embedded(ROGUE)}) as s:
        yield s


def _hold_streams(gw: str, key: str, chute: str, n: int, clock: Clock, seconds: float,
                  gateway_inflight) -> None:
    """``n`` concurrent streamed requests to ``chute`` held open for ``seconds`` of clock
    (each asks for 1000 tokens: far longer than the test needs to advance the clock)."""
    auth = {"Authorization": f"Bearer {key}"}
    opened, release = threading.Barrier(n + 1), threading.Event()
    errors: list[BaseException] = []

    def one() -> None:
        try:
            info = httpx.get(f"{gw}/e2e/instances/{chute}", headers=auth, timeout=10).json()[
                "instances"][0]
            target = SealTarget(info["instance_id"], base64.b64decode(info["e2e_pubkey"]), (2,))
            call = seal_call(target, chute_id=chute, nonce=info["nonces"][0],
                             path="/v1/completions", stream=True,
                             payload={"prompt": "hold", "max_tokens": 1000}, version=2,
                             api_key=key)
            with httpx.stream("POST", f"{gw}/e2e/invoke", headers=call.headers,
                              content=call.body, timeout=60) as r:
                assert r.status_code == 200
                chunks = r.iter_bytes()
                next(chunks)  # generating: in flight at the gateway

                opened.wait(30)
                release.wait(30)
                chunks.close()
            # leaving the stream early: the gateway cancels it and counts it finished
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors.append(exc)
            opened.abort()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    opened.wait(30)
    clock.t += seconds
    release.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    deadline = time.monotonic() + 30
    while gateway_inflight(chute) and time.monotonic() < deadline:
        time.sleep(0.05)


def _scale_plan(gw: str, key: str | None, fleet: Path, state: Path) -> list[dict]:
    import argparse

    parser = argparse.ArgumentParser()
    add_chutes_commands(parser.add_subparsers())
    argv = ["chutes", "--gateway", gw, *(["--api-key", key] if key else []), "scale",
            "--fleet", str(fleet), "--once", "--exec", "--state", str(state)]
    args = parser.parse_args(argv)
    from chutes_subnet.chutes_cli import _scale

    return _scale(args)


async def test_two_chutes_three_miners_demand_moves_and_everything_follows(subnet, tmp_path):
    db = SQLiteDatabase(tmp_path / "gw.db")
    store = SQLChuteStore(db, cache_seconds=0)
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    owner, _ = keys.create("owner")
    friend, friend_key = keys.create("friend")
    outsider, _ = keys.create("outsider")
    app = create_app(GatewayConfig(instance_capacity=1), registry=registry,
                     nonce_store=MemoryNonceStore(), keys=keys, usage=MemoryUsageMeter(),
                     forward_signer=forward_signer(subnet.validator_wallet), chutes=store)
    gateway = app.state.gateway
    clock = Clock()
    gateway.demand = DemandMeter(window=60, clock=clock)
    scaling = {"min_instances": 1, "max_instances": 3}
    cfg = ValidatorConfig(concurrency=4, timeout=10.0, rechallenge_probability=0.0,
                          dangerous_accept_simulated_tee=True,
                          benchmark=BenchmarkConfig(prompts_per_miner=1, max_tokens=6,
                                                    verify_sample=1, require_reference=False))
    validator = Validator(cfg, chain=subnet.chain, wallet=subnet.validator_wallet,
                          verifier=vf.dev_verifier(), state=ValidatorState(tmp_path / "v.db"),
                          registry=registry, chutes=store,
                          supply=lambda: chute_targets(gateway))
    a1, b1, rogue = (subnet.by_name(n) for n in ("a1", "b1", "rogue"))

    def inflight(chute: str) -> int:
        series = gateway.demand._series.get(chute)
        return series.inflight if series is not None else 0
    markers = tmp_path / "markers"
    markers.mkdir()

    def touch(name: str) -> list[str]:
        return [sys.executable, "-c", f"open({str(markers / name)!r}, 'a').write('x')"]

    fleet = tmp_path / "fleet.toml"
    fleet.write_text("slots = 3\n" + "".join(
        f'[[chutes]]\nname = "{name}"\ninstances = ["{m.server.url}"]\n'
        f"start = {json.dumps(touch('start-' + tag))}\nstop = {json.dumps(touch('stop-' + tag))}\n"
        for name, m, tag in ((A, a1, "a"), (B, b1, "b"))))
    try:
        with UvicornThread(app) as gw:
            api = httpx.AsyncClient(base_url=gw.url, timeout=30)
            r = await api.post("/v1/chutes", json=chute_dict(A, scaling=scaling),
                               headers=auth(owner))
            assert r.status_code == 201, r.text
            r = await api.post("/v1/chutes", headers=auth(owner), json=chute_dict(
                B, visibility="private", allow=[friend_key.key_id], scaling=scaling))
            assert r.status_code == 201, r.text

            # round 1: both deployed chutes attested and routable; the made-up one refused
            first = await validator.run_round()
            assert first.result_for(a1.uid).ok and first.result_for(b1.uid).ok, first.results
            refused = first.result_for(rogue.uid)
            assert refused.reason == "attestation:unregistered_chute"
            assert {r.chute_id for r in registry.list_verified()} == {CA, CB}
            assert rogue.uid not in first.weights

            # B is invisible to other keys, on every endpoint
            listed = (await api.get("/v1/chutes", headers=auth(outsider))).json()["data"]
            assert {c["name"] for c in listed} == {A}
            models = (await api.get("/v1/models", headers=auth(outsider))).json()["data"]
            assert {m["id"] for m in models} == {A}
            for who, status in ((outsider, 404), (friend, 200)):
                r = await api.get(f"/e2e/instances/{CB}", headers=auth(who))
                assert r.status_code == status

            # demand on A: a request in flight for a whole window (the embedded engine is
            # batch-1, so one long stream is what an instance serves at a time)
            _hold_streams(gw.url, outsider, CA, 1, clock, 60, inflight)
            t = chute_targets(gateway)
            snap = gateway.demand.snapshot()
            assert (t[CA].target, t[CA].current) == (2, 1) and t[CB].target == 1, snap
            second = await validator.run_round()
            ratio_a = second.round_scores[a1.uid] / second.round_scores[b1.uid]
            plan = _scale_plan(gw.url, owner, fleet, tmp_path / "scaler.json")
            assert [(p["action"], p["chute"]) for p in plan] == [("start", A)]
            assert plan[0]["executed"] and (markers / "start-a").exists()

            # demand moves to B (the friend's private chute); A's slides out of the window
            clock.t += 120
            _hold_streams(gw.url, friend, CB, 1, clock, 60, inflight)
            t = chute_targets(gateway)
            assert (t[CA].target, t[CB].target) == (1, 2)
            assert t[CB].multiplier > t[CA].multiplier
            third = await validator.run_round()
            ratio_b = third.round_scores[a1.uid] / third.round_scores[b1.uid]
            assert ratio_a > 1.2 and ratio_b < 1 / 1.2, (ratio_a, ratio_b)
            plan = _scale_plan(gw.url, owner, fleet, tmp_path / "scaler.json")
            assert [(p["action"], p["chute"]) for p in plan] == [("start", B)]
            # a scaler without a key sees only public chutes: B is not offered to it
            blind = _scale_plan(gw.url, None, fleet, tmp_path / "scaler2.json")
            assert all(p["chute"] != B for p in blind)

            # retiring A: its miner is refused at the next round and A disappears
            assert (await api.delete(f"/v1/chutes/{CA}", headers=auth(owner))).status_code == 200
            fourth = await validator.run_round()
            assert fourth.result_for(a1.uid).reason == "attestation:retired_chute"
            assert {r.chute_id for r in registry.list_verified()} == {CB}
            await api.aclose()
    finally:
        await validator.aclose()
        db.close()
