"""Builders of the OpenAI response and stream-chunk objects the backends return.

Shapes (``kind`` is "chat" for /v1/chat/completions, "text" for /v1/completions)::

    chat.completion        {id, object, created, model,
                            choices: [{index, message: {role, content},
                                       finish_reason, logprobs}],
                            usage: {prompt_tokens, completion_tokens, total_tokens}}
    text_completion        {..., choices: [{index, text, finish_reason, logprobs}], usage}
    chat.completion.chunk  {..., choices: [{index, delta: {[role,] content},
                                            finish_reason, logprobs}]}
    text_completion chunk  {..., choices: [{index, text, finish_reason, logprobs}]}
    usage chunk            {..., choices: [], usage}   (last chunk of every stream)

Backends always end a stream with the usage chunk (the miner needs the counts for its
receipt); the miner forwards it to the caller only when the request asked for it
(:func:`wants_stream_usage`, OpenAI's ``stream_options.include_usage``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Kind", "ResponseMeta", "usage", "completion_object", "token_chunk", "usage_chunk",
           "wants_stream_usage"]

Kind = Literal["chat", "text"]


@dataclass(frozen=True)
class ResponseMeta:
    """Fields shared by a response and all chunks of one stream."""

    kind: Kind
    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            prefix = "chatcmpl-" if self.kind == "chat" else "cmpl-"
            object.__setattr__(self, "id", prefix + secrets.token_hex(12))

    def header(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_object(
    meta: ResponseMeta, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    """A full non-stream response."""
    if meta.kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason,
            "logprobs": None,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
        obj = "text_completion"
    return {
        **meta.header(obj),
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def token_chunk(
    meta: ResponseMeta, text: str, finish_reason: str | None, first: bool
) -> dict[str, Any]:
    """One streamed token; the first chat chunk also carries ``role``."""
    if meta.kind == "chat":
        delta: dict[str, Any] = {"content": text}
        if first:
            delta = {"role": "assistant", "content": text}
        choice: dict[str, Any] = {
            "index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None
        }
        return {**meta.header("chat.completion.chunk"), "choices": [choice]}
    choice = {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}
    return {**meta.header("text_completion"), "choices": [choice]}


def usage_chunk(meta: ResponseMeta, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The closing chunk of a stream: no choices, only usage."""
    obj = "chat.completion.chunk" if meta.kind == "chat" else "text_completion"
    return {**meta.header(obj), "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def wants_stream_usage(body: Any) -> bool:
    """Whether a streaming request asked for the closing usage chunk
    (``stream_options.include_usage`` is ``true``; OpenAI's default is no usage chunk)."""
    options = body.get("stream_options") if isinstance(body, dict) else None
    return isinstance(options, dict) and options.get("include_usage") is True
