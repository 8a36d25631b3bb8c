"""The miner neuron: one attested, end-to-end-encrypted inference instance.

* :class:`MinerConfig` — settings (``config.py``);
* :func:`create_app` — the FastAPI app (``/attest``, ``/e2e/invoke``, ``/health``,
  ``/metrics``) around a backend, an evidence provider and a validator gate;
* :func:`serve_miner` — wallet + chain -> published axon -> uvicorn.

See docs/miner.md.
"""

from chutes_subnet.miner.app import PLAINTEXT_PATH, create_app
from chutes_subnet.miner.config import FAULTS, MinerConfig
from chutes_subnet.miner.runner import build_provider, publish_axon, serve_miner
from chutes_subnet.miner.state import MinerInstance

__all__ = [
    "MinerConfig",
    "FAULTS",
    "MinerInstance",
    "create_app",
    "serve_miner",
    "build_provider",
    "publish_axon",
    "PLAINTEXT_PATH",
]
