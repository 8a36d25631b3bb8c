"""Inference backends of a miner instance (they run inside the TEE and see plaintext).

* :class:`EmbeddedBackend` — a deterministic tiny byte-level transformer in torch
  (default; CPU or GPU); validators recompute its answers with
  :func:`reference_completion` and require an exact match;
* :class:`OpenAIUpstreamBackend` — forwards to vLLM/SGLang/any OpenAI-compatible server
  that runs inside the same TEE on loopback.

Both implement :class:`Backend`; build one with :func:`make_backend`.
See docs/inference.md.
"""

from chutes_subnet.inference.base import (
    DEFAULT_MODEL_ID,
    DEFAULT_SEED,
    Backend,
    InvalidRequestError,
    UpstreamError,
)
from chutes_subnet.inference.embedded import EmbeddedBackend
from chutes_subnet.inference.factory import BACKEND_KINDS, make_backend
from chutes_subnet.inference.generation import (
    GenerationResult,
    default_device,
    get_model,
    prepare,
    reference_completion,
    run_generation,
)
from chutes_subnet.inference.model import DEFAULT_CONFIG, ModelConfig, weights_digest
from chutes_subnet.inference.requests import (
    DEFAULT_MAX_TOKENS,
    MAX_TOKENS_LIMIT,
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
)
from chutes_subnet.inference.tokenizer import Utf8StreamDecoder, render_chat
from chutes_subnet.inference.upstream import OpenAIUpstreamBackend

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
