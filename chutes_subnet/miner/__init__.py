"""The miner neuron: one attested, end-to-end-encrypted inference instance.

* :class:`MinerConfig` — settings (``config.py``);
* :func:`create_app` — the FastAPI app (``/attest``, ``/e2e/invoke``, ``/health``,
  ``/metrics``) around a backend, an evidence provider and a validator gate;
* :func:`serve_miner` — wallet + chain -> published axon -> uvicorn.

See docs/miner.md.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

# Lazy exports: ``neurons/miner.py --help`` and start-up errors must not wait for torch.
_EXPORTS = {
    "MinerConfig": "config", "FAULTS": "config", "InstanceIdentity": "state",
    "create_app": "app", "PLAINTEXT_PATH": "app", "serve_miner": "runner",
    "build_provider": "runner", "publish_axon": "runner",
}

__all__ = [
    "MinerConfig",
    "FAULTS",
    "InstanceIdentity",
    "create_app",
    "serve_miner",
    "build_provider",
    "publish_axon",
    "PLAINTEXT_PATH",
]


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("_")})
