"""LocalChain: SQLite-backed chain shared between processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from chutes_subnet.chain import Chain, LocalChain, open_chain
from chutes_subnet.errors import ChainError


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def chain():
    c = LocalChain(":memory:", netuid=5, block_time=0, weights_rate_limit=10)
    yield c
    c.close()


def _run_child(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_is_a_chain(chain):
    assert isinstance(chain, Chain)


async def test_registration_assigns_lowest_free_uid(chain):
    assert chain.register("hk0", "ck") == 0
    assert chain.register("hk1", "ck") == 1
    assert chain.register("hk2", "ck") == 2
    chain.deregister("hk1")
    assert chain.register("hk3", "ck") == 1
    graph = await chain.metagraph()
    assert [(n.uid, n.hotkey) for n in graph.neurons] == [(0, "hk0"), (1, "hk3"), (2, "hk2")]
    with pytest.raises(ChainError, match="not registered"):
        chain.deregister("hk1")


async def test_reregistration_updates_stake_but_not_owner(chain):
    uid = chain.register("hk", "ck", stake=1.0)
    assert chain.register("hk", "ck", stake=50.0, validator_permit=True) == uid
    neuron = (await chain.metagraph()).by_hotkey("hk")
    assert neuron is not None and neuron.stake == 50.0 and neuron.validator_permit
    with pytest.raises(ChainError, match="another coldkey"):
        chain.register("hk", "thief")


def test_subnet_capacity():
    c = LocalChain(":memory:", netuid=1, max_uids=2, block_time=0)
    c.register("a", "c")
    c.register("b", "c")
    with pytest.raises(ChainError, match="full"):
        c.register("x", "c")


async def test_blocks_follow_wall_time_and_manual_advance():
    clock = Clock()
    c = LocalChain(":memory:", block_time=12.0, clock=clock)
    assert await c.block() == 1
    clock.now += 11.9
    assert await c.block() == 1
    clock.now += 0.2
    assert await c.block() == 2
    assert c.advance(10) == 12
    clock.now += 120
    assert await c.block() == 22
    with pytest.raises(ValueError):
        c.advance(-1)


async def test_serve_axon_validates_and_stores(chain):
    chain.register("m", "ck")
    await chain.serve_axon("m", "10.0.0.5", 8091)
    assert (await chain.metagraph()).by_hotkey("m").axon == "10.0.0.5:8091"
    await chain.serve_axon("m", "::1", 443)
    assert (await chain.metagraph()).by_hotkey("m").axon == "[::1]:443"
    for ip, port in (("0.0.0.0", 80), ("not-an-ip", 80), ("10.0.0.5", 0), ("10.0.0.5", 70000)):
        with pytest.raises(ValueError):
            await chain.serve_axon("m", ip, port)
    with pytest.raises(ChainError, match="not registered"):
        await chain.serve_axon("ghost", "10.0.0.5", 8091)


async def test_set_weights_normalizes_and_enforces_rate_limit(chain):
    v = chain.register("v", "ck", stake=1000, validator_permit=True)
    m1 = chain.register("m1", "ck")
    m2 = chain.register("m2", "ck")
    assert await chain.blocks_since_last_update("v") == 1  # never set: current block
    first = await chain.set_weights("v", {m1: 2.0, m2: 6.0, v: 0.0}, version_key=3)
    assert first.success and first.block == 1
    assert chain.get_weights("v") == {m1: 0.25, m2: 0.75}
    assert await chain.weights_rate_limit() == 10

    chain.advance(9)
    again = await chain.set_weights("v", {m1: 1.0}, version_key=3)
    assert not again.success and "rate limited" in again.message and "retry in 1" in again.message
    assert chain.get_weights("v") == {m1: 0.25, m2: 0.75}
    assert await chain.blocks_since_last_update("v") == 9

    chain.advance(1)
    later = await chain.set_weights("v", {m1: 1.0}, version_key=3)
    assert later.success and chain.get_weights("v") == {m1: 1.0}
    assert await chain.blocks_since_last_update("v") == 0


async def test_set_weights_refusals(chain):
    chain.register("v", "ck", validator_permit=True)
    chain.register("m", "ck")
    cases = [
        ("ghost", {0: 1.0}, 0, "not registered"),
        ("m", {0: 1.0}, 0, "no validator permit"),
        ("v", {99: 1.0}, 0, "not registered"),
        ("v", {1: 0.0}, 0, "all weights are zero"),
        ("v", {1: -1.0}, 0, "invalid weights"),
    ]
    for hotkey, weights, version, message in cases:
        result = await chain.set_weights(hotkey, weights, version)
        assert not result.success and message in result.message, (hotkey, result)
    chain.set_min_version_key(7)
    old = await chain.set_weights("v", {1: 1.0}, 6)
    assert not old.success and "version key" in old.message
    assert (await chain.set_weights("v", {1: 1.0}, 7)).success


async def test_deregistration_drops_weights_to_and_from_the_uid(chain):
    chain.register("v", "ck", validator_permit=True)
    m = chain.register("m", "ck")
    keep = chain.register("k", "ck")
    assert (await chain.set_weights("v", {m: 1.0, keep: 1.0}, 0)).success
    chain.deregister("m")
    assert chain.get_weights("v") == {keep: 0.5}
    chain.deregister("v")
    assert chain.get_weights("v") == {}


async def test_closed_chain_refuses(chain):
    await chain.aclose()
    with pytest.raises(ChainError, match="closed"):
        await chain.block()


async def test_state_is_shared_with_another_process(tmp_path):
    path = tmp_path / "chain.sqlite"
    parent = open_chain(f"local:{path}", netuid=2, block_time=0, weights_rate_limit=5,
                        create_subnet=True)
    assert isinstance(parent, LocalChain)
    parent.register("validator", "ck", stake=10, validator_permit=True)
    out = _run_child(f"""
        import asyncio
        from chutes_subnet.chain import open_chain
        async def main():
            chain = open_chain("local:{path}", netuid=2)
            uid = chain.register("miner", "ck-m", stake=1.5)
            await chain.serve_axon("miner", "127.0.0.1", 9123)
            chain.advance(3)
            print(uid, await chain.weights_rate_limit(), await chain.block())
            await chain.aclose()
        asyncio.run(main())
    """)
    assert out.split() == ["1", "5", "4"]  # the child adopted the creator's parameters
    graph = await parent.metagraph()
    assert graph.block == 4
    miner = graph.by_hotkey("miner")
    assert miner is not None and miner.axon == "127.0.0.1:9123" and miner.stake == 1.5

    assert (await parent.set_weights("validator", {1: 1.0}, 0)).success
    out = _run_child(f"""
        import asyncio
        from chutes_subnet.chain import LocalChain
        async def main():
            chain = LocalChain("{path}", netuid=2)
            print(chain.get_weights("validator"))
            result = await chain.set_weights("validator", {{1: 2.0}}, 0)
            print(result.success, await chain.blocks_since_last_update("validator"))
        asyncio.run(main())
    """)
    assert out.splitlines() == ["{1: 1.0}", "False 0"]  # rate limit holds across processes
    await parent.aclose()


def test_concurrent_registrations_from_several_processes_get_unique_uids(tmp_path):
    path = tmp_path / "chain.sqlite"
    LocalChain(str(path), netuid=1, block_time=0, create=True).close()
    code = textwrap.dedent(f"""
        import sys
        from chutes_subnet.chain import LocalChain
        chain = LocalChain("{path}", netuid=1)
        for i in range(15):
            chain.register(f"hk-{{sys.argv[1]}}-{{i}}", "ck")
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(n)], stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    chain = LocalChain(str(path), netuid=1)
    import asyncio

    graph = asyncio.run(chain.metagraph())
    assert len(graph.neurons) == 60
    assert [n.uid for n in graph.neurons] == list(range(60))
    assert len({n.hotkey for n in graph.neurons}) == 60
    chain.close()


def test_subnets_in_one_file_are_independent(tmp_path):
    path = str(tmp_path / "c.sqlite")
    a = LocalChain(path, netuid=1, block_time=0, create=True)
    b = LocalChain(path, netuid=2, create=True)
    a.register("x", "ck")
    assert b.register("y", "ck") == 0
    a.advance(2)
    import asyncio

    assert asyncio.run(b.block()) == 3  # one clock for the whole chain
    assert [n.hotkey for n in asyncio.run(b.metagraph()).neurons] == ["y"]
    a.close()
    b.close()


def test_argument_validation():
    with pytest.raises(ValueError):
        LocalChain(":memory:", block_time=-1)
    with pytest.raises(ValueError):
        LocalChain(":memory:", weights_rate_limit=-1)
    with pytest.raises(ValueError):
        LocalChain(":memory:", max_uids=0)
    c = LocalChain(":memory:")
    with pytest.raises(ValueError):
        c.register("", "ck")
    with pytest.raises(ValueError):
        c.register("hk", "ck", stake=-1)


def test_public_api_is_exactly_all():
    import chutes_subnet.auth as auth
    import chutes_subnet.chain as chain
    import chutes_subnet.wallets as wallets

    assert set(chain.__all__) == {
        "Chain", "Metagraph", "Neuron", "WeightsResult", "BittensorChain", "LocalChain",
        "open_chain", "plan_weights", "quantize_weights",
    }
    for module in (chain, auth, wallets):
        assert all(hasattr(module, name) for name in module.__all__)
    assert {"sign_headers", "ValidatorGate", "MetagraphCache"} <= set(auth.__all__)


def test_a_file_chain_refuses_an_unknown_netuid(tmp_path):
    """A mistyped --netuid must not silently start an empty subnet (issue 17, item 5)."""
    path = str(tmp_path / "c.sqlite")
    LocalChain(path, netuid=1, block_time=0, create=True).close()
    with pytest.raises(ChainError, match=r"subnet 7 does not exist .*subnets: \[1\].*"
                                         r"chutes-subnet localchain create-subnet"):
        LocalChain(path, netuid=7)
    with pytest.raises(ChainError, match="subnet 3 does not exist"):
        open_chain(f"local:{path}", netuid=3)
    again = LocalChain(path, netuid=1)  # an existing subnet opens without create
    assert again.netuid == 1
    again.close()
