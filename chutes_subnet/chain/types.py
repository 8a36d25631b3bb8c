"""Chain-neutral snapshot types and the :class:`Chain` interface.

Everything above :mod:`chutes_subnet.chain` (miner, validator, gateway, auth) codes
against these frozen values and the small async protocol below, never against the
bittensor SDK. Two implementations exist: :class:`~chutes_subnet.chain.BittensorChain`
(subtensor through bittensor 11.x) and :class:`~chutes_subnet.chain.LocalChain`
(a SQLite file shared between processes, for the demo and tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Neuron", "Metagraph", "WeightsResult", "Chain"]


@dataclass(frozen=True)
class Neuron:
    """One registered hotkey on the subnet at a given block.

    ``stake`` is the neuron's total stake as the chain reports it, in whole units
    (rao / 1e9). ``axon`` is the served ``"ip:port"`` (IPv6 as ``"[ip]:port"``) or
    None when the neuron has not published an endpoint.
    """

    uid: int
    hotkey: str
    coldkey: str
    validator_permit: bool
    stake: float
    axon: str | None


@dataclass(frozen=True)
class Metagraph:
    """The subnet's neurons at one block, ordered by uid."""

    netuid: int
    block: int
    neurons: tuple[Neuron, ...]
    _by_hotkey: dict[str, Neuron] = field(init=False, repr=False, compare=False)
    _by_uid: dict[int, Neuron] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "neurons", tuple(sorted(self.neurons, key=lambda n: n.uid)))
        object.__setattr__(self, "_by_hotkey", {n.hotkey: n for n in self.neurons})
        object.__setattr__(self, "_by_uid", {n.uid: n for n in self.neurons})

    def by_hotkey(self, hotkey: str) -> Neuron | None:
        """The neuron registered under ``hotkey``, or None."""
        return self._by_hotkey.get(hotkey)

    def by_uid(self, uid: int) -> Neuron | None:
        """The neuron at ``uid``, or None."""
        return self._by_uid.get(uid)

    @property
    def validators(self) -> tuple[Neuron, ...]:
        """Neurons holding a validator permit."""
        return tuple(n for n in self.neurons if n.validator_permit)

    @property
    def served(self) -> tuple[Neuron, ...]:
        """Neurons that published an axon endpoint."""
        return tuple(n for n in self.neurons if n.axon)


@dataclass(frozen=True)
class WeightsResult:
    """Outcome of one weight submission. ``block`` is the block it was judged at."""

    success: bool
    message: str
    block: int | None = None


@runtime_checkable
class Chain(Protocol):
    """What miners and validators need from a chain.

    Reads and writes raise :class:`chutes_subnet.errors.ChainError` when the chain
    cannot be reached or rejects a call; ``set_weights`` instead reports expected
    refusals (rate limit, not registered, no permit) in its :class:`WeightsResult`.
    """

    netuid: int

    async def metagraph(self) -> Metagraph:
        """A snapshot of the subnet's neurons."""
        ...

    async def block(self) -> int:
        """The current block number."""
        ...

    async def serve_axon(self, hotkey: str, ip: str, port: int) -> None:
        """Publish ``ip:port`` as the endpoint of ``hotkey``."""
        ...

    async def set_weights(
        self, hotkey: str, weights: dict[int, float], version_key: int
    ) -> WeightsResult:
        """Submit ``{uid: weight}`` as the weights of validator ``hotkey``."""
        ...

    async def blocks_since_last_update(self, hotkey: str) -> int:
        """Blocks since ``hotkey`` last set weights (the current block if never)."""
        ...

    async def weights_rate_limit(self) -> int:
        """Blocks a validator must wait between two weight submissions."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
