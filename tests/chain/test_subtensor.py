"""BittensorChain through the SDK's offline seam: ``bt.Client(substrate=<fake>)``.

No subtensor can run here, so a fake *Substrate* (the SDK's own backend protocol)
stands in for the node. Everything above it is the real SDK: ``Client``, the
metagraph decoder, ``SetWeights``/``ServeAxon`` intents with their preflight and
conforming, and the executor that signs with the real wallet.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from bittensor.balance import Balance
from bittensor.result import ExtrinsicResult, RpcConnectionError

from chutes_subnet.chain import (
    BittensorChain,
    Metagraph,
    open_chain,
    plan_weights,
    quantize_weights,
)
from chutes_subnet.errors import ChainError
from chutes_subnet.wallets import ensure_dev_wallet, hotkey_ss58

NETUID = 7
BLOCK = 5000


class FakeSubstrate:
    """In-memory node: storage dict, a metagraph runtime answer, scripted submits."""

    def __init__(self, graph: dict | None, storage: dict[tuple, Any]) -> None:
        self.token_symbols: dict[int, str] = {}
        self.graph = graph
        self.storage = storage
        self.block = BLOCK
        self.submitted: list[tuple[Any, str]] = []
        self.outcomes: list[Any] = []  # ExtrinsicResult or Exception, consumed per submit
        self.runtime_delay = 0.0

    def balance(self, rao: int, netuid: int = 0) -> Balance:
        return Balance(int(rao), netuid, None)

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def block_number(self) -> int:
        return self.block

    async def block_hash(self, block: int | None = None) -> str:
        return f"0x{(self.block if block is None else block):064x}"

    async def block_time(self) -> float:
        return 12.0

    async def query(self, module, storage_function, params=None, block_hash=None):
        return self.storage.get((storage_function, tuple(params or ())))

    async def query_map(self, module, storage_function, params=None, block_hash=None):
        return []

    async def runtime_call(self, api, method, params, block_hash=None):
        assert (api, method, params) == ("SubnetInfoRuntimeApi", "get_metagraph", [NETUID])
        if self.runtime_delay:
            await asyncio.sleep(self.runtime_delay)
        return self.graph

    async def compose(self, call):
        return call

    async def estimate_fee(self, call, keypair) -> Balance:
        return Balance.from_rao(1000)

    async def submit(self, call, keypair, **_kwargs) -> ExtrinsicResult:
        self.submitted.append((call, keypair.ss58_address))
        outcome = self.outcomes.pop(0) if self.outcomes else ExtrinsicResult(True, "included")
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def _axon(ip: str, port: int) -> dict:
    address = ipaddress.ip_address(ip)
    return {"ip": int(address), "port": port, "ip_type": address.version}


@pytest.fixture(scope="module")
def wallets(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("wallets"))
    return {
        "validator": ensure_dev_wallet("validator", "default", root),
        "miner": ensure_dev_wallet("miner", "default", root),
        "other": ensure_dev_wallet("other", "default", root),
    }


@pytest.fixture(autouse=True)
def _token_cache(tmp_path, monkeypatch):
    # Client.connect caches token symbols on disk; keep it out of $HOME.
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "symbols.json"))


@pytest.fixture
def node(wallets) -> FakeSubstrate:
    v, m, o = (hotkey_ss58(wallets[k]) for k in ("validator", "miner", "other"))
    graph = {
        "netuid": NETUID,
        "block": BLOCK,
        "tempo": 360,
        "last_step": 4900,
        "blocks_since_last_step": 100,
        "owner_hotkey": v,
        "owner_coldkey": v,
        "network_registered_at": 10,
        "hotkeys": [v, m, o],
        "coldkeys": ["5Cold0", "5Cold1", "5Cold2"],
        "validator_permit": [True, False, False],
        "total_stake": [1_500_000_000, 2_000_000, 0],
        "axons": [_axon("0.0.0.0", 0), _axon("203.0.113.7", 8091), _axon("2001:db8::1", 443)],
    }
    storage = {
        ("Uids", (NETUID, v)): 0,
        ("Uids", (NETUID, m)): 1,
        ("LastUpdate", (NETUID,)): [BLOCK - 150, 0, 0],
        ("WeightsSetRateLimit", (NETUID,)): 100,
        ("CommitRevealWeightsEnabled", (NETUID,)): False,
        ("MinAllowedWeights", (NETUID,)): 1,
        ("MaxWeightsLimit", (NETUID,)): 65535,
        ("SubnetEpochConsensus", (NETUID,)): "Yuma",
    }
    return FakeSubstrate(graph, storage)


def _chain(node, wallet, **kwargs) -> tuple[BittensorChain, list[float]]:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    chain = BittensorChain(NETUID, wallet, network="local", substrate=node, sleep=fake_sleep,
                           **kwargs)
    return chain, sleeps


async def test_metagraph_is_parsed_from_the_runtime_answer(node, wallets):
    chain, _ = _chain(node, wallets["validator"])
    graph = await chain.metagraph()
    assert isinstance(graph, Metagraph)
    assert (graph.netuid, graph.block) == (NETUID, BLOCK)
    validator, miner, other = graph.neurons
    assert validator.hotkey == hotkey_ss58(wallets["validator"])
    assert validator.validator_permit and not miner.validator_permit
    assert validator.stake == pytest.approx(1.5)
    assert miner.stake == pytest.approx(0.002)
    assert validator.axon is None  # 0.0.0.0 means "not served"
    assert miner.axon == "203.0.113.7:8091"
    assert other.axon == "[2001:db8::1]:443"
    assert graph.by_hotkey(miner.hotkey) is miner and graph.by_uid(2) is other
    assert graph.by_uid(9) is None and graph.by_hotkey("5Nobody") is None
    assert graph.validators == (validator,)
    await chain.aclose()


async def test_missing_subnet_is_a_chain_error(node, wallets):
    node.graph = None
    chain, _ = _chain(node, wallets["validator"])
    with pytest.raises(ChainError, match=f"subnet {NETUID} does not exist"):
        await chain.metagraph()


async def test_reads_time_out_into_chain_error(node, wallets):
    node.runtime_delay = 5
    chain, _ = _chain(node, wallets["validator"], timeout=0.2)
    with pytest.raises(ChainError, match="timed out"):
        await chain.metagraph()


async def test_block_rate_limit_and_last_update(node, wallets):
    chain, _ = _chain(node, wallets["validator"])
    assert await chain.block() == BLOCK
    assert await chain.weights_rate_limit() == 100
    assert await chain.blocks_since_last_update(hotkey_ss58(wallets["validator"])) == 150
    with pytest.raises(ChainError, match="not registered"):
        await chain.blocks_since_last_update(hotkey_ss58(wallets["other"]))


async def test_set_weights_submits_the_conformed_vector_signed_by_the_hotkey(node, wallets):
    chain, _ = _chain(node, wallets["validator"])
    scores = {1: 3.0, 2: 1.0, 0: 0.0}
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), scores, version_key=42)
    assert result.success, result.message
    assert result.block == BLOCK
    [(call, signer)] = node.submitted
    assert signer == hotkey_ss58(wallets["validator"])
    assert (call.module, call.function) == ("SubtensorModule", "set_mechanism_weights")
    expected = quantize_weights(plan_weights(scores))
    assert dict(zip(call.params["dests"], call.params["weights"], strict=True)) == expected == {1: 65535,
                                                                                    2: 21845}
    assert call.params["version_key"] == 42 and call.params["netuid"] == NETUID


async def test_set_weights_checks_the_rate_limit_before_signing(node, wallets):
    node.storage[("LastUpdate", (NETUID,))] = [BLOCK - 10, 0, 0]
    chain, _ = _chain(node, wallets["validator"])
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0}, 1)
    assert not result.success
    assert "rate limited" in result.message and "retry in 90" in result.message
    assert node.submitted == []


async def test_transient_failures_are_retried_with_exponential_backoff(node, wallets):
    node.outcomes = [
        ExtrinsicResult(False, "Priority is too low"),
        RpcConnectionError("connection reset"),
        ExtrinsicResult(True, "included"),
    ]
    chain, sleeps = _chain(node, wallets["validator"], max_attempts=3, backoff=0.5)
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0}, 1)
    assert result.success and len(node.submitted) == 3
    assert sleeps == [0.5, 1.0]


async def test_a_timed_out_submission_that_landed_is_success(node, wallets):
    """Issue 17: the extrinsic was included but its confirmation timed out."""
    submit = node.submit

    async def landed_then_timeout(call, keypair, **kwargs):
        await submit(call, keypair, **kwargs)
        node.storage[("LastUpdate", (NETUID,))] = [BLOCK, 0, 0]
        raise TimeoutError

    node.submit = landed_then_timeout
    chain, sleeps = _chain(node, wallets["validator"], max_attempts=3)
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0}, 1)
    assert result.success and f"landed at block {BLOCK}" in result.message
    assert len(node.submitted) == 1 and sleeps == []    # not submitted twice


async def test_retries_are_bounded(node, wallets):
    node.outcomes = [ExtrinsicResult(False, "Transaction is outdated")] * 5
    chain, sleeps = _chain(node, wallets["validator"], max_attempts=2)
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0}, 1)
    assert not result.success and "gave up after 2 attempts" in result.message
    assert len(node.submitted) == 2 and sleeps == [2.0]


async def test_chain_rejections_are_final(node, wallets):
    node.outcomes = [ExtrinsicResult(False, "MaxWeightExceeded")]
    chain, sleeps = _chain(node, wallets["validator"])
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0}, 1)
    assert not result.success and result.message == "MaxWeightExceeded"
    assert len(node.submitted) == 1 and sleeps == []


async def test_sdk_preflight_refusal_comes_back_as_result(node, wallets):
    # The miner's hotkey has uid 1; the SDK's own preflight rejects an unregistered signer.
    del node.storage[("Uids", (NETUID, hotkey_ss58(wallets["miner"])))]
    node.storage[("Uids", (NETUID, hotkey_ss58(wallets["validator"])))] = 0
    chain, _ = _chain(node, wallets["validator"])
    node.storage[("MinAllowedWeights", (NETUID,))] = 5
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0}, 1)
    assert not result.success and "at least 5 weights" in result.message
    assert node.submitted == []


async def test_dry_run_plans_without_submitting(node, wallets):
    chain, _ = _chain(node, wallets["validator"], dry_run=True)
    result = await chain.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0, 2: 1.0}, 1)
    assert result.success and result.message.startswith("dry run")
    assert node.submitted == []


async def test_serve_axon_publishes_ip_and_port(node, wallets):
    chain, _ = _chain(node, wallets["miner"])
    await chain.serve_axon(hotkey_ss58(wallets["miner"]), "203.0.113.9", 9000)
    [(call, signer)] = node.submitted
    assert signer == hotkey_ss58(wallets["miner"])
    assert (call.module, call.function) == ("SubtensorModule", "serve_axon")
    assert call.params["ip"] == int(ipaddress.ip_address("203.0.113.9"))
    assert (call.params["port"], call.params["ip_type"], call.params["netuid"]) == (9000, 4, NETUID)


async def test_serve_axon_rejection_raises(node, wallets):
    node.outcomes = [ExtrinsicResult(False, "ServingRateLimitExceeded")]
    chain, _ = _chain(node, wallets["miner"])
    with pytest.raises(ChainError, match="ServingRateLimitExceeded"):
        await chain.serve_axon(hotkey_ss58(wallets["miner"]), "203.0.113.9", 9000)


async def test_writes_need_the_matching_wallet(node, wallets):
    chain, _ = _chain(node, wallets["miner"])
    with pytest.raises(ChainError, match="does not match"):
        await chain.serve_axon(hotkey_ss58(wallets["validator"]), "203.0.113.9", 9000)
    readonly, _ = _chain(node, None)
    with pytest.raises(ChainError, match="no wallet"):
        await readonly.set_weights(hotkey_ss58(wallets["validator"]), {1: 1.0}, 1)
    assert node.submitted == []


def test_open_chain_dispatches_on_the_spec(tmp_path):
    endpoint = open_chain("ws://127.0.0.1:9944", netuid=3)
    assert isinstance(endpoint, BittensorChain) and endpoint.endpoint == "ws://127.0.0.1:9944"
    named = open_chain("test", netuid=3)
    assert isinstance(named, BittensorChain) and named.endpoint.startswith("wss://")
    with pytest.raises(ChainError, match="unknown network"):
        open_chain("no-such-net", netuid=3)
    with pytest.raises(ValueError):
        open_chain("  ", netuid=3)
    with pytest.raises(ValueError):
        open_chain("local:", netuid=3)
