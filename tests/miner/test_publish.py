"""Miner start-up against the chain: read the published axon first, serve only on
change, tolerate a rate-limited re-serve of an unchanged endpoint, bind before
publishing (issue 17, items 3 and 4)."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.chain import LocalChain, Metagraph
from chutes_subnet.errors import ChainError, ConfigError
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import MinerConfig, publish_axon, serve_miner

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


class RecordingChain:
    """A LocalChain that counts ServeAxon calls and can act like subtensor's serving
    rate limit (the test double stands in for subtensor only)."""

    def __init__(self, *, rate_limited: bool = False, stale_reads: int = 0) -> None:
        self.inner = LocalChain(":memory:", netuid=4, block_time=0)
        self.netuid = 4
        self.serves: list[tuple[str, int]] = []
        self.rate_limited = rate_limited
        self.stale_reads = stale_reads
        self._stale: Any = None

    async def metagraph(self) -> Any:
        if self.stale_reads and self._stale is not None:
            self.stale_reads -= 1
            return self._stale
        return await self.inner.metagraph()

    async def serve_axon(self, hotkey: str, ip: str, port: int) -> None:
        self.serves.append((ip, port))
        if self.rate_limited:
            raise ChainError("serve_axon rejected: ServingRateLimitExceeded")
        await self.inner.serve_axon(hotkey, ip, port)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _config(**kw: Any) -> MinerConfig:
    return MinerConfig(tee="simulated", host="127.0.0.1", **kw)


async def test_unchanged_endpoint_is_not_served_again():
    chain = RecordingChain()
    chain.inner.register(HOTKEY, "ck")
    assert await publish_axon(chain, HOTKEY, _config(port=9001)) == ("127.0.0.1:9001", True)
    assert await publish_axon(chain, HOTKEY, _config(port=9001)) == ("127.0.0.1:9001", False)
    assert chain.serves == [("127.0.0.1", 9001)]          # the restart sent nothing
    assert await publish_axon(chain, HOTKEY, _config(port=9002)) == ("127.0.0.1:9002", True)
    assert chain.serves[-1] == ("127.0.0.1", 9002)


async def test_external_port_is_what_gets_published():
    chain = RecordingChain()
    chain.inner.register(HOTKEY, "ck")
    cfg = _config(port=9001, external_ip="203.0.113.7", external_port=443)
    assert await publish_axon(chain, HOTKEY, cfg) == ("203.0.113.7:443", True)


async def test_rate_limited_reserve_of_the_same_endpoint_is_success():
    chain = RecordingChain()
    chain.inner.register(HOTKEY, "ck")
    await chain.inner.serve_axon(HOTKEY, "127.0.0.1", 9001)
    # a lagging read says "nothing published"; the chain then rate-limits the serve
    current = await chain.inner.metagraph()
    chain._stale = Metagraph(netuid=4, block=current.block,
                             neurons=tuple(replace(n, axon=None) for n in current.neurons))
    chain.stale_reads, chain.rate_limited = 1, True
    assert await publish_axon(chain, HOTKEY, _config(port=9001)) == ("127.0.0.1:9001", False)
    assert len(chain.serves) == 1


async def test_rate_limited_change_is_one_clear_error():
    chain = RecordingChain(rate_limited=True)
    chain.inner.register(HOTKEY, "ck")
    await chain.inner.serve_axon(HOTKEY, "127.0.0.1", 9001)
    with pytest.raises(ChainError, match=r"rate-limits ServeAxon.*127\.0\.0\.1:9001 instead "
                                         r"of 127\.0\.0\.1:9002.*--axon\.no_serve"):
        await publish_axon(chain, HOTKEY, _config(port=9002))


async def test_unregistered_hotkey_names_the_registration_commands():
    chain = RecordingChain()
    with pytest.raises(ChainError, match=r"not registered on netuid 4.*btcli subnets register"
                                         r".*chutes-subnet localchain register"):
        await publish_axon(chain, HOTKEY, _config(port=9001))
    assert chain.serves == []


async def test_unspecified_address_names_the_flag():
    chain = RecordingChain()
    chain.inner.register(HOTKEY, "ck")
    with pytest.raises(ChainError, match=r"--axon\.external_ip"):
        await publish_axon(chain, HOTKEY, MinerConfig(tee="simulated", host="0.0.0.0"))


async def test_port_in_use_stops_the_miner_before_it_publishes(tmp_path):
    from chutes_subnet.wallets import ensure_dev_wallet, hotkey_ss58

    wallet = ensure_dev_wallet("m", "h", str(tmp_path))
    chain = RecordingChain()
    chain.inner.register(hotkey_ss58(wallet), "ck")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use.*"
                                              "--axon.port"):
            await asyncio.wait_for(serve_miner(
                _config(port=port, metagraph_refresh=30), wallet=wallet, chain=chain,
                backend=make_backend("embedded"), provider=SimulatedProvider(gpu_count=1)), 60)
    finally:
        busy.close()
    assert chain.serves == []                              # nothing was advertised
    assert (await chain.inner.metagraph()).by_hotkey(hotkey_ss58(wallet)).axon is None
