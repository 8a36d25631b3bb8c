"""Inference backends of a miner instance (they run inside the TEE and see plaintext).

* :class:`EmbeddedBackend` — a deterministic tiny byte-level transformer in torch
  (default; CPU or GPU); validators recompute its answers with
  :func:`reference_completion` and require an exact match;
* :class:`OpenAIUpstreamBackend` — forwards to vLLM/SGLang/any OpenAI-compatible server
  that runs inside the same TEE on loopback.

Both implement :class:`Backend`; build one with :func:`make_backend`.
See docs/inference.md.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

from chutes_subnet.inference.base import (
    DEFAULT_MODEL_ID,
    DEFAULT_SEED,
    Backend,
    InvalidRequestError,
    UpstreamError,
)

# Lazy exports: the torch-backed modules load on first use, so command-line start-up
# (flags, help, configuration errors) does not pay for torch.
_LAZY = {
    "EmbeddedBackend": "embedded", "BACKEND_KINDS": "backend_factory", "make_backend": "backend_factory",
    "GenerationResult": "generation", "default_device": "generation",
    "get_model": "generation", "prepare": "generation",
    "reference_completion": "generation", "run_generation": "generation",
    "DEFAULT_CONFIG": "model", "ModelConfig": "model", "weights_digest": "model",
    "DEFAULT_MAX_TOKENS": "requests", "MAX_TOKENS_LIMIT": "requests",
    "ChatCompletionRequest": "requests", "CompletionRequest": "requests",
    "parse_request": "requests", "Utf8StreamDecoder": "tokenizer", "render_chat": "tokenizer",
    "OpenAIUpstreamBackend": "upstream",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_MODEL_ID",
    "DEFAULT_SEED",
    "DEFAULT_CONFIG",
    "DEFAULT_MAX_TOKENS",
    "MAX_TOKENS_LIMIT",
    "BACKEND_KINDS",
    "Backend",
    "InvalidRequestError",
    "UpstreamError",
    "EmbeddedBackend",
    "OpenAIUpstreamBackend",
    "make_backend",
    "reference_completion",
    "run_generation",
    "GenerationResult",
    "prepare",
    "get_model",
    "default_device",
    "ModelConfig",
    "weights_digest",
    "ChatCompletionRequest",
    "CompletionRequest",
    "parse_request",
    "render_chat",
    "Utf8StreamDecoder",
]


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("_")})
