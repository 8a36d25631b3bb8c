"""``open_chain``: pick a :class:`~chutes_subnet.chain.Chain` from one spec string."""

from __future__ import annotations

from typing import Any

from .local import LocalChain
from .subtensor import BittensorChain
from .types import Chain

__all__ = ["open_chain", "LOCAL_PREFIX"]

LOCAL_PREFIX = "local:"


def open_chain(
    spec: str,
    *,
    netuid: int,
    wallet: Any = None,
    timeout: float = 30,
    block_time: float | None = None,
    weights_rate_limit: int | None = None,
    dry_run: bool = False,
    create_subnet: bool = False,
) -> Chain:
    """Open the chain named by ``spec``.

    - ``"local:/path/chain.sqlite"`` (or ``"local::memory:"``): a :class:`LocalChain`
      file shared by every process that opens it; ``block_time`` and
      ``weights_rate_limit`` configure it (see :class:`LocalChain`); an unknown
      ``netuid`` is refused unless ``create_subnet``.
    - ``"ws://host:port"`` / ``"wss://..."``: subtensor at that endpoint.
    - a bittensor network name (``finney``, ``test``, ``local``, ``archive``,
      ``devnet``): subtensor through the SDK's endpoint pool for that network.

    ``wallet`` signs writes on subtensor (None = read-only). Raises ``ValueError``
    for an empty spec and :class:`~chutes_subnet.errors.ChainError` for an unknown
    network name.
    """
    spec = (spec or "").strip()
    if not spec:
        raise ValueError("empty chain spec")
    if spec.startswith(LOCAL_PREFIX):
        path = spec[len(LOCAL_PREFIX):]
        if not path:
            raise ValueError("local chain spec needs a path: local:/path/to/chain.sqlite")
        return LocalChain(
            path, netuid=netuid, block_time=block_time, weights_rate_limit=weights_rate_limit,
            create=create_subnet or path == ":memory:",
        )
    if spec.startswith(("ws://", "wss://")):
        return BittensorChain(
            netuid, wallet, chain_endpoint=spec, timeout=timeout, dry_run=dry_run
        )
    return BittensorChain(netuid, wallet, network=spec, timeout=timeout, dry_run=dry_run)
