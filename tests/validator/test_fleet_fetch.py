"""Miner fleets end to end (issue 15 part 4): one hotkey fronts many instances.

Real miner servers on loopback (simulated TEE), a LocalChain, the real validator:

* ``fleet``: a front and two siblings (three TDs, three GPU sets) behind one hotkey;
* ``single``: a miner that serves no list (404), evaluated at its axon as before;
* ``other``: its own front, plus ``fleet``'s first sibling listed under its hotkey;
* ``mixed``: a healthy front and sibling, plus a debug-TD sibling, a dead URL, a
  sibling on the front's GPUs and the front again at a second URL;
* ``forged``: an endpoint serving an instance list not signed by its hotkey.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from chutes_subnet.auth import forward_signer, hotkey_signer
from chutes_subnet.chain import Neuron
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app as create_gateway
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.inference import DEFAULT_MODEL_ID
from chutes_subnet.instance_id import instance_id_for_b64
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
from chutes_subnet.validator.config import ScoringConfig
from chutes_subnet.validator.failures import EvaluationFailure
from chutes_subnet.validator.fleet_fetch import (
    NO_LIST_RECHECK_SECONDS,
    FleetCache,
    FleetMember,
    fetch_fleet,
)
from chutes_subnet.validator.hardware import (
    FLEET_GPU_REUSED,
    PLATFORM_REUSED,
    refuse_shared_hardware,
)
from chutes_subnet.validator.identity import (
    DUPLICATE_REASON,
    FLEET_DUPLICATE,
    refuse_duplicate_keys,
)
from chutes_subnet.validator.metrics import ValidatorMetrics
from chutes_subnet.validator.results import AttestationSummary, MinerResult
from chutes_subnet.validator.scoring import instance_scores, score_round, update_ema
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58
from chutes_subnet.wire.call import SealTarget, seal_call
from chutes_subnet.wire.fleet_signing import fleet_json, sign_fleet
from chutes_subnet.wire.messages import FleetInstance
from chutes_subnet.wire.protocol import (
    MAX_FLEET_BYTES,
    MAX_FLEET_INSTANCES,
    chute_id_for_model,
)
from tests import validator_fixtures as vf
from tests.servers import UvicornThread, free_port

Sibling = vf.Sibling
DEAD = free_port()  # reserved and never listened on
FLEETS = {
    "fleet": [Sibling(seed=b"fleet-1"), Sibling(seed=b"fleet-2")],
    "other": [Sibling(url="http://127.0.0.1:{fleet.1}")],
    "mixed": [Sibling(seed=b"mixed-1"), Sibling(fault="debug-quote", seed=b"mixed-2"),
              Sibling(url=f"http://127.0.0.1:{DEAD}"),
              Sibling(seed=b"mixed-front"),                      # the front's machine
              Sibling(alias=True)],                              # the front, at 2 URLs
}
SEEDS = {"fleet": b"fleet-0", "single": b"single", "other": b"other", "mixed": b"mixed-front"}


class ListServer:
    """An axon that serves whatever bytes the test puts in ``body`` at GET /fleet."""

    def __init__(self) -> None:
        self.body, self.status, self.delay = b"", 200, 0.0

        async def fleet(_request):
            if self.delay:
                await asyncio.sleep(self.delay)
            return Response(self.body, status_code=self.status, media_type="application/json")

        self.server = UvicornThread(Starlette(routes=[Route("/fleet", fleet)])).start()


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fleet")
    names = {"fleet": None, "single": None, "other": None, "mixed": None}
    with vf.local_subnet(tmp, names, seeds=SEEDS, fleets=FLEETS) as s:
        liar = ensure_dev_wallet("forged", "default", str(tmp / "wallets"))
        s.forged_hotkey = hotkey_ss58(liar)
        s.forged_uid = s.chain.register(s.forged_hotkey, coldkey_ss58(liar))
        s.lists = ListServer()
        # signed by another hotkey (the fleet's), listing the fleet's instances
        fleet_wallet = ensure_dev_wallet("miner-fleet", "default", str(tmp / "wallets"))
        s.lists.body = fleet_json(sign_fleet(
            hotkey_signer(fleet_wallet), netuid=s.chain.netuid, issued_at=int(time.time()),
            ttl_seconds=600, instances=[FleetInstance(url=u)
                                        for u in s.by_name("fleet").listed]))
        asyncio.run(s.chain.serve_axon(s.forged_hotkey, "127.0.0.1", s.lists.server.port))
        try:
            yield s
        finally:
            s.lists.server.stop()


def _config(**kw) -> ValidatorConfig:
    base = dict(concurrency=8, timeout=15.0, rechallenge_probability=0.0,
                dangerous_accept_simulated_tee=True, instance_concurrency=3,
                benchmark=BenchmarkConfig(prompts_per_miner=1, max_tokens=8, verify_sample=1))
    base.update(kw)
    return ValidatorConfig(**base)


@pytest.fixture(scope="module")
def rounds(subnet, tmp_path_factory):
    """Two rounds of one validator over the whole subnet (shared by the tests below)."""
    registry = MemoryInstanceRegistry()
    path = tmp_path_factory.mktemp("v") / "v.sqlite"

    async def run():
        validator = Validator(_config(), chain=subnet.chain, wallet=subnet.validator_wallet,
                              verifier=vf.dev_verifier(), state=ValidatorState(path),
                              registry=registry)
        try:
            reports = [await validator.run_round() for _ in range(2)]
            return reports, validator.published_instances()
        finally:
            await validator.aclose()

    reports, published = asyncio.run(run())
    return reports, registry, published, path


def test_one_hotkey_three_instances_three_records_and_one_summed_weight(subnet, rounds):
    reports, registry, published, path = rounds
    last = reports[-1]
    fleet, single = subnet.by_name("fleet"), subnet.by_name("single")
    mine = last.results_for(fleet.uid)
    # each listed instance attested and benchmarked on its own, in the list's order
    assert [r.instance_url for r in mine] == fleet.listed and len(mine) == 3
    assert all(r.ok and r.requests == r.successes == 1 for r in mine), mine
    ids = [r.attestation.instance_id for r in mine]
    gpus = [set(r.attestation.gpu_ids) for r in mine]
    assert len(set(ids)) == 3 and not (gpus[0] & gpus[1] or gpus[0] & gpus[2])
    # three registry records, each an instance's own URL, key and derived id
    records = sorted((r for r in registry.list_verified() if r.hotkey == fleet.hotkey),
                     key=lambda r: fleet.listed.index(r.url))
    assert [r.url for r in records] == fleet.listed
    assert [r.instance_id for r in records] == ids
    assert all(instance_id_for_b64(r.e2e_pubkey) == r.instance_id and r.uid == fleet.uid
               for r in records)
    assert set(published[fleet.uid]) == set(ids)
    # the uid's round score is the sum of its instances' scores ...
    per_instance = instance_scores(list(last.results), _config().scoring)
    own = [s for r, s in zip(last.results, per_instance, strict=True) if r.uid == fleet.uid]
    assert len(own) == 3 and min(own) > 0
    assert last.round_scores[fleet.uid] == pytest.approx(sum(own))
    assert sum(own) > max(own)  # more than any one of its instances earns
    # the single miner (no list) is evaluated at its axon as before
    assert last.result_for(single.uid).ok
    assert last.result_for(single.uid).instance_url == single.server.url
    assert [r.url for r in registry.list_verified() if r.hotkey == single.hotkey] \
        == [single.server.url]
    assert last.weights[fleet.uid] > 0 and last.weights[single.uid] > 0
    # the record scores split the uid's EMA by the instances' shares
    assert sum(r.score for r in records) == pytest.approx(last.ema[fleet.uid])
    # metrics count uids and instances apart
    metrics = ValidatorMetrics()
    metrics.observe_round(last)
    text = metrics.render().decode()
    passed = sum(1 for r in last.results if r.ok)
    evaluated = sum(1 for r in last.results if r.instance_url)
    assert f"chutes_validator_instances_passed {float(passed)}" in text
    assert f"chutes_validator_instances_evaluated {float(evaluated)}" in text
    assert f"chutes_validator_miners_evaluated {float(len(set(last.round_scores)))}" in text
    assert evaluated > len(set(last.round_scores))
    # the state keeps every instance's result under its uid
    state = ValidatorState(path)
    stored = state.load().results[fleet.uid]
    state.close()
    assert stored["attested"] and stored["reason"] is None
    assert [i["instance_url"] for i in stored["instances"]] == fleet.listed


def test_an_instance_listed_by_two_hotkeys_counts_once(subnet, rounds):
    reports, registry, _published, _path = rounds
    last = reports[-1]
    fleet, other = subnet.by_name("fleet"), subnet.by_name("other")
    borrowed = fleet.listed[1]
    mine = {r.instance_url: r for r in last.results_for(other.uid)}
    assert mine[other.server.url].ok
    # the borrowed instance refuses a challenge addressed to another hotkey (btauth/1
    # receiver), and even answering would bind the fleet's hotkey into its quote
    assert not mine[borrowed].ok and mine[borrowed].reason == "bad_response"
    assert next(r for r in last.results_for(fleet.uid) if r.instance_url == borrowed).ok
    holders = {r.hotkey for r in registry.list_verified() if r.url == borrowed}
    assert holders == {fleet.hotkey}
    assert [r.url for r in registry.list_verified() if r.hotkey == other.hotkey] \
        == [other.server.url]


def test_failing_instances_do_not_zero_their_healthy_siblings(subnet, rounds):
    reports, registry, _published, _path = rounds
    mixed = subnet.by_name("mixed")
    for report in reports:
        by_url = {r.instance_url: r for r in report.results_for(mixed.uid)}
        front, healthy, debug, dead, twin, alias = (by_url[u] for u in mixed.listed)
        assert front.ok and healthy.ok
        assert debug.reason == "attestation:debug_td"
        assert dead.reason == "unreachable"
        # one GPU set under two instances counts once; one instance under two URLs too
        assert twin.reason == "fleet:gpu_reused" and "counts once" in twin.detail_text
        assert alias.reason == "fleet:duplicate_instance"
        assert alias.attestation.instance_id == front.attestation.instance_id
        scores = instance_scores(list(report.results), _config().scoring)
        healthy_sum = sum(s for r, s in zip(report.results, scores, strict=True)
                          if r.uid == mixed.uid)
        assert report.round_scores[mixed.uid] == pytest.approx(healthy_sum) and healthy_sum > 0
        assert report.weights.get(mixed.uid, 0.0) > 0
    # only the two healthy instances are published
    urls = sorted(r.url for r in registry.list_verified() if r.hotkey == mixed.hotkey)
    assert urls == sorted(mixed.listed[:2])


def test_a_list_not_signed_by_the_uids_hotkey_scores_zero_and_publishes_nothing(
        subnet, rounds):
    reports, registry, _published, _path = rounds
    for report in reports:
        (result,) = report.results_for(subnet.forged_uid)
        assert result.reason == "fleet:wrong_hotkey" and result.instance_url is None
        assert report.round_scores[subnet.forged_uid] == 0.0
        assert subnet.forged_uid not in report.weights
    assert not [r for r in registry.list_verified() if r.hotkey == subnet.forged_hotkey]
    # the fleet's own instances were not taken over through the forged list
    assert {r.hotkey for r in registry.list_verified()
            if r.url in subnet.by_name("fleet").listed} == {subnet.by_name("fleet").hotkey}


def test_the_gateway_routes_to_each_instance_of_a_fleet_directly(subnet, rounds):
    _reports, registry, _published, _path = rounds
    fleet = subnet.by_name("fleet")
    keys = MemoryApiKeyStore()
    secret, _rec = keys.create("app")
    auth = {"Authorization": f"Bearer {secret}"}
    app = create_gateway(GatewayConfig(max_instances=16), registry=registry,
                         nonce_store=MemoryNonceStore(), keys=keys, usage=MemoryUsageMeter(),
                         forward_signer=forward_signer(subnet.validator_wallet))
    chute = chute_id_for_model(DEFAULT_MODEL_ID)
    with UvicornThread(app) as gw:
        listed = httpx.get(f"{gw.url}/e2e/instances/{chute}", headers=auth, timeout=10).json()
        offered = {i["instance_id"]: i for i in listed["instances"]}
        records = {r.instance_id: r for r in registry.list_verified(chute)
                   if r.hotkey == fleet.hotkey}
        assert len(records) == 3 and set(records) <= set(offered)   # every instance offered
        served = {}
        for iid, rec in records.items():
            info = offered[iid]
            target = SealTarget(iid, base64.b64decode(info["e2e_pubkey"]), (2,))
            call = seal_call(target, chute_id=chute, nonce=info["nonces"][0],
                             path="/v1/completions", stream=False,
                             payload={"prompt": "hi", "max_tokens": 2}, version=2)
            resp = httpx.post(f"{gw.url}/e2e/invoke", headers={**call.headers, **auth},
                              content=call.body, timeout=30)
            # only the instance holding the key can answer: 200 means the gateway went
            # straight to that instance's own URL
            assert resp.status_code == 200, (rec.url, resp.text)
            served[rec.url] = resp
    assert sorted(served) == sorted(fleet.listed)


# --- the fetch on its own: real HTTP, every refusal ---------------------------------

def _neuron(hotkey: str, port: int) -> Neuron:
    return Neuron(uid=9, hotkey=hotkey, coldkey="ck", stake=0.0, axon=f"127.0.0.1:{port}",
                  validator_permit=False)


def _sign(wallet, n: int, *, netuid: int = 7, ttl: int = 600) -> bytes:
    return fleet_json(sign_fleet(hotkey_signer(wallet), netuid=netuid, ttl_seconds=ttl,
                                 issued_at=int(time.time()),
                                 instances=[FleetInstance(url=_url(i)) for i in range(n)]))


def _url(i: int) -> str:
    return f"http://10.0.{i // 200}.{i % 200 + 1}:8091"


async def _fetch(server: ListServer, hotkey: str, *, limit: int = 16, timeout: float = 5.0):
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await fetch_fleet(http, _neuron(hotkey, server.server.port), netuid=7,
                                 limit=limit)


async def test_fetch_bounds_and_refusals(subnet, tmp_path):
    lists = ListServer()
    wallet = ensure_dev_wallet("fetch", "default", str(tmp_path))
    hotkey, stranger = hotkey_ss58(wallet), subnet.validator_hotkey
    try:
        lists.body = _sign(wallet, MAX_FLEET_INSTANCES)
        members = await _fetch(lists, hotkey, limit=3)     # the validator's cap, in order
        assert members == tuple(FleetMember(f"http://10.0.0.{i}:8091") for i in (1, 2, 3))
        assert len(await _fetch(lists, hotkey, limit=MAX_FLEET_INSTANCES)) == 64
        cases = {
            "fleet:wrong_hotkey": (lists.body, stranger),
            "fleet:wrong_netuid": (_sign(wallet, 1, netuid=8), hotkey),
            "fleet:malformed": (b'{"v":1}', hotkey),
            "fleet:too_large": (b" " * (MAX_FLEET_BYTES + 1), hotkey),
        }
        raw = json.loads(_sign(wallet, 2))
        raw["fleet"]["instances"].append({"url": "http://6.6.6.6:1", "instance_id": None})
        cases["fleet:bad_signature"] = (json.dumps(raw).encode(), hotkey)
        raw = json.loads(_sign(wallet, 2))
        raw["signature"] = base64.b16encode(b"\0" * 64).decode().lower()
        cases["fleet:bad_signature "] = (json.dumps(raw).encode(), hotkey)
        for reason, (body, who) in cases.items():
            lists.body = body
            with pytest.raises(EvaluationFailure) as err:
                await _fetch(lists, who)
            assert err.value.reason == reason.strip(), (reason, err.value.detail)
        lists.status = 500
        with pytest.raises(EvaluationFailure, match="HTTP 500"):
            await _fetch(lists, hotkey)
        lists.status = 404                                   # no list: the axon alone
        assert await _fetch(lists, hotkey) == (FleetMember(lists.server.url),)
        lists.status, lists.delay, lists.body = 200, 2.0, _sign(wallet, 1)
        with pytest.raises(EvaluationFailure) as err:
            await _fetch(lists, hotkey, timeout=0.5)
        assert err.value.reason == "timeout"
        dead = _neuron(hotkey, free_port())
        async with httpx.AsyncClient(timeout=2) as http:
            with pytest.raises(EvaluationFailure) as err:
                await fetch_fleet(http, dead, netuid=7, limit=4)
        assert err.value.reason == "unreachable"
    finally:
        lists.server.stop()


# --- the pure rules: aggregation, hardware and keys counted once --------------------

def _inst(uid: int, url: str, *, iid: str, platform: str | None = None,
          gpus: tuple[str, ...] = (), tps: float = 100.0, ttft: float = 0.1,
          hotkey: str | None = None) -> MinerResult:
    summary = dataclasses.replace(
        AttestationSummary(True, iid, "c", "m", "k", False, None, None, None, len(gpus), (),
                           0, 1), platform_id=platform, gpu_ids=gpus)
    return MinerResult(uid, hotkey or f"hk{uid}", f"ck{uid}", "1.2.3.4:1", True,
                       attestation=summary, requests=2, successes=2, tokens_per_s=tps,
                       ttft_s=ttft, chute_id="c", instance_url=url)


def test_a_uid_scores_the_sum_of_its_instances():
    cfg = ScoringConfig()
    single = [_inst(1, "u1", iid="a")]
    fleet = single + [_inst(2, f"u{i}", iid=f"b{i}") for i in range(3)]
    assert score_round(single, cfg) == {1: pytest.approx(1.0)}
    assert score_round(fleet, cfg) == {1: pytest.approx(1.0), 2: pytest.approx(3.0)}
    # a failed instance adds nothing and takes nothing away
    broken = [*fleet, dataclasses.replace(fleet[-1], instance_url="u9", reason="timeout")]
    assert score_round(broken, cfg)[2] == pytest.approx(3.0)
    # organic traffic is counted per uid and shared by its passing instances
    org = ScoringConfig(organic_weight=1.0)
    assert score_round(fleet, org, {1: 300.0, 2: 300.0}) == {1: pytest.approx(1.0),
                                                             2: pytest.approx(1.0)}
    # the EMA keeps a fleet's sum (clipped at max_score, not at 1)
    ema = update_ema({}, {2: 3.0}, alpha=1.0, neurons={2: ("hk2", "ck2")}, max_score=16)
    assert ema[2].ema == pytest.approx(3.0)
    assert update_ema({}, {2: 99.0}, alpha=1.0, neurons={2: ("hk2", "ck2")},
                      max_score=16)[2].ema == 16


def test_a_fleet_may_share_a_host_but_never_a_gpu():
    results = [_inst(1, "a", iid="i1", platform="ppid:host", gpus=("gpu:1",)),
               _inst(1, "b", iid="i2", platform="ppid:host", gpus=("gpu:2",)),
               _inst(1, "c", iid="i3", platform="ppid:host", gpus=("gpu:2", "gpu:3"))]
    out, holders = refuse_shared_hardware(results, {})
    assert [r.reason for r in out] == [None, None, FLEET_GPU_REUSED]
    assert holders == {"ppid:host": "hk1", "gpu:1": "hk1", "gpu:2": "hk1"}
    # another uid on the same host is still refused; the incumbent fleet keeps it all
    intruder = _inst(2, "d", iid="i4", platform="ppid:host", gpus=("gpu:9",))
    out, _ = refuse_shared_hardware([*results, intruder], holders)
    assert [r.reason for r in out] == [None, None, FLEET_GPU_REUSED, PLATFORM_REUSED]


def test_one_instance_under_two_urls_or_two_uids_counts_once():
    a, b = _inst(1, "x", iid="same"), _inst(1, "y", iid="same")
    out = refuse_duplicate_keys([a, b], lambda _iid: None)
    assert [r.reason for r in out] == [None, FLEET_DUPLICATE]
    other = _inst(2, "z", iid="same")
    out = refuse_duplicate_keys([a, b, other], lambda _iid: "hk1")   # uid 1 holds it
    assert [r.reason for r in out] == [None, FLEET_DUPLICATE, DUPLICATE_REASON]
    out = refuse_duplicate_keys([a, b, other], lambda _iid: None)    # nobody holds it
    assert [r.reason for r in out] == [DUPLICATE_REASON] * 3


async def test_verified_lists_are_reused_while_fresh_and_refusals_never(tmp_path):
    lists = ListServer()
    wallet = ensure_dev_wallet("cache", "default", str(tmp_path))
    hotkey, cache, now = hotkey_ss58(wallet), FleetCache(), [time.time()]
    neuron = _neuron(hotkey, lists.server.port)

    async def fetch():
        async with httpx.AsyncClient(timeout=5) as http:
            return await fetch_fleet(http, neuron, netuid=7, limit=16, cache=cache,
                                     clock=lambda: now[0])

    try:
        lists.body = _sign(wallet, 2, ttl=600)
        first = await fetch()
        lists.body = b"garbage"                     # the next fetch would be refused ...
        assert await fetch() == first               # ... but the signed list is still fresh
        now[0] += 301                               # past half its validity: fetched again
        with pytest.raises(EvaluationFailure, match="not JSON"):
            await fetch()
        with pytest.raises(EvaluationFailure):      # a refusal is not cached
            await fetch()
        lists.status = 404                          # "no list" is reused for a while
        assert await fetch() == (FleetMember(lists.server.url),)
        lists.status, lists.body = 200, _sign(wallet, 3, ttl=3600)
        assert len(await fetch()) == 1
        now[0] += NO_LIST_RECHECK_SECONDS
        assert len(await fetch()) == 3
        # another hotkey at the uid (re-registration) never sees the old entry
        moved = dataclasses.replace(neuron, hotkey=subnet_free_hotkey())
        async with httpx.AsyncClient(timeout=5) as http:
            with pytest.raises(EvaluationFailure) as err:
                await fetch_fleet(http, moved, netuid=7, limit=16, cache=cache,
                                  clock=lambda: now[0])
        assert err.value.reason == "fleet:wrong_hotkey"
    finally:
        lists.server.stop()


def subnet_free_hotkey() -> str:
    return hotkey_ss58(vf.bench_wallet())
