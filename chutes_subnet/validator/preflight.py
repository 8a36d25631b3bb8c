"""Validator start-up checks: the subnet exists, the hotkey is registered on it and
holds a validator permit.

A validator without a permit is refused by every miner (403) and by the chain's
``set_weights``, so running rounds would only log failures. These checks turn the
three operator mistakes into one line naming the fix. ``wait_for_permit`` seconds
lets a freshly staked hotkey wait for the epoch that grants its permit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from chutes_subnet.chain import Chain, Neuron
from chutes_subnet.errors import ConfigError

__all__ = ["check_validator"]

log = logging.getLogger("chutes_subnet.validator")


async def check_validator(chain: Chain, hotkey: str, *, wait_for_permit: float = 0.0,
                          poll: float = 12.0,
                          sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Neuron:
    """The validator's own neuron; raises ``ConfigError`` (or ``ChainError``) otherwise."""
    deadline = time.monotonic() + max(0.0, wait_for_permit)
    while True:
        graph = await chain.metagraph()  # ChainError: subnet missing / chain unreachable
        me = graph.by_hotkey(hotkey)
        if me is None:
            raise ConfigError(
                f"validator hotkey {hotkey} is not registered on netuid {chain.netuid}: "
                f"register it (btcli subnets register --netuid {chain.netuid}; dev chain: "
                f"chutes-subnet localchain register) or fix --netuid / --wallet.*")
        if me.validator_permit:
            return me
        if time.monotonic() >= deadline:
            raise ConfigError(
                f"validator hotkey {hotkey} (uid {me.uid}, stake {me.stake:g} alpha) has no "
                f"validator permit on netuid {chain.netuid}: miners answer 403 and the chain "
                f"refuses its weights; permits go to the top stakes at each epoch, so add "
                f"stake (btcli stake add) and wait, or pass --neuron.wait_for_permit SECONDS")
        log.info("uid %d has no validator permit yet; checking again in %.0fs", me.uid, poll)
        await sleep(poll)
