"""Chain access for chutes-subnet: the one package that talks to subtensor.

Callers use the frozen snapshot types and the :class:`Chain` protocol; which chain
sits behind it is chosen once with :func:`open_chain`:

- :class:`BittensorChain` — subtensor through bittensor 11.x (reads, ``ServeAxon``,
  ``SetWeights`` with rate-limit check, retries and a dry-run mode);
- :class:`LocalChain` — a SQLite file shared by the demo's processes.

:func:`plan_weights` is the pure scores -> weights step (the SDK's own clip and
normalization), so validators can log and test exactly what they will submit.
"""

from __future__ import annotations

from .chain_factory import open_chain
from .local import LocalChain
from .subtensor import BittensorChain
from .types import Chain, Metagraph, Neuron, WeightsResult
from .weights import plan_weights, quantize_weights

__all__ = [
    "Chain",
    "Metagraph",
    "Neuron",
    "WeightsResult",
    "BittensorChain",
    "LocalChain",
    "open_chain",
    "plan_weights",
    "quantize_weights",
]
