"""``/v1/embeddings`` on the embedded model: deterministic text vectors.

A text's embedding is the mean, over its token positions (BOS + UTF-8 bytes), of the
model's final normalised hidden states, L2-normalised and reported as float32. It is a
pure function of ``(seed, config, text)``, so a validator recomputes it with
:func:`reference_embeddings` exactly as it recomputes completions.

Accepted body (unknown fields ignored; errors name the field, never echo a value):

* ``input``: a string or a list of 1..:data:`MAX_INPUTS` non-empty strings (token-id
  arrays are refused: the embedded model's tokens are bytes), each at most the model
  context, :data:`MAX_TOTAL_TOKENS` tokens in all;
* ``encoding_format``: ``"float"`` (default) or ``"base64"`` (little-endian float32
  bytes, what the OpenAI SDK asks for unless told otherwise);
* ``dimensions``: 1..``d_model``; the vector's prefix, re-normalised.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, field_validator

from chutes_subnet.inference.base import InvalidRequestError
from chutes_subnet.inference.model import DEFAULT_CONFIG, ModelConfig, TinyByteLM
from chutes_subnet.inference.requests import Lenient, describe_validation_error
from chutes_subnet.inference.tokenizer import encode_prompt

__all__ = [
    "MAX_INPUTS",
    "MAX_TOTAL_TOKENS",
    "EmbeddingRequest",
    "embed_texts",
    "embedding_response",
    "parse_embedding_request",
    "reference_embeddings",
    "run_embeddings",
]

#: Most texts in one request.
MAX_INPUTS = 64
#: Most tokens (bytes + one BOS per text) in one request: bounds the CPU one call costs.
MAX_TOTAL_TOKENS = 32768


class EmbeddingRequest(Lenient):
    input: list[str] = Field(min_length=1, max_length=MAX_INPUTS)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, strict=True)
    model: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and not all(isinstance(v, str) and v for v in value):
            raise ValueError("must be a non-empty string or a list of non-empty strings")
        return value


def parse_embedding_request(body: Any, config: ModelConfig = DEFAULT_CONFIG) -> EmbeddingRequest:
    """Validate an embeddings body; raise :class:`InvalidRequestError` on any problem."""
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    try:
        request = EmbeddingRequest.model_validate(body)
    except ValidationError as exc:  # not chained: pydantic quotes the plaintext input
        raise InvalidRequestError(describe_validation_error(exc)) from None
    if request.dimensions is not None and request.dimensions > config.d_model:
        raise InvalidRequestError(f"dimensions: at most {config.d_model} for this model")
    lengths = [len(encode_prompt(text)) for text in request.input]
    if max(lengths) > config.max_context:
        raise InvalidRequestError(f"input: a text exceeds the model context of "
                                  f"{config.max_context} tokens")
    if sum(lengths) > MAX_TOTAL_TOKENS:
        raise InvalidRequestError(f"input: more than {MAX_TOTAL_TOKENS} tokens in all")
    return request


def embed_texts(model: TinyByteLM, texts: list[str],
                dimensions: int | None = None) -> list[list[float]]:
    """One unit-length float32 vector per text (blocking; runs the model)."""
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([encode_prompt(text)], device=model.device)
            vector = model.hidden(ids)[0].mean(dim=0).to(torch.float64)
            if dimensions is not None:
                vector = vector[:dimensions]
            vector = vector / vector.norm().clamp_min(1e-12)
            out.append(vector.to(torch.float32).tolist())
    return out


def embedding_response(model_id: str, vectors: list[list[float]], encoding_format: str,
                       prompt_tokens: int) -> dict[str, Any]:
    """The OpenAI ``list`` of ``embedding`` objects with ``usage``."""
    def encode(vector: list[float]) -> Any:
        if encoding_format == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        return vector

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)}
                 for i, v in enumerate(vectors)],
        "model": model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def run_embeddings(model: TinyByteLM, body: Any, model_id: str) -> dict[str, Any]:
    """Validate ``body`` and answer it (blocking)."""
    request = parse_embedding_request(body, model.config)
    vectors = embed_texts(model, request.input, request.dimensions)
    tokens = sum(len(encode_prompt(text)) for text in request.input)
    return embedding_response(model_id, vectors, request.encoding_format, tokens)


def reference_embeddings(body: Any, *, seed: int, config: ModelConfig = DEFAULT_CONFIG,
                         model_id: str = "", device: str = "cpu") -> dict[str, Any]:
    """What the embedded backend with ``(seed, config)`` answers (blocking, cached model)."""
    from chutes_subnet.inference.generation import get_model

    return run_embeddings(get_model(seed, config, device), body, model_id)
