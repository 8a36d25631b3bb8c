"""Validation of OpenAI request bodies for the embedded backend.

Accepted (unknown fields are ignored):

* ``/v1/chat/completions``: ``messages`` = 1..256 items of ``{role, content}``;
  ``role`` in system/developer/user/assistant/tool; ``content`` a string or a list of
  ``{"type": "text", "text": ...}`` parts (joined without separator).
* ``/v1/completions``: ``prompt`` = a string (or a list holding exactly one string).
* both: ``max_tokens`` (chat also ``max_completion_tokens``) in 1..4096, default 256;
  ``n`` must be 1 (anything else: :data:`N_UNSUPPORTED`, a 400 naming ``n``);
  ``stop``: null, a string or a list of 1..4 non-empty strings of at most
  :data:`MAX_STOP_CHARS` characters (OpenAI semantics; applied by
  :mod:`~chutes_subnet.inference.generation`); ``stream`` bool. ``temperature``, ``top_p``, ``seed`` are accepted
  and ignored: the embedded model always decodes greedily, so its output is a pure
  function of (weights seed, config, prompt, max_tokens).

Errors are :class:`InvalidRequestError` whose message names the offending field but
never echoes its value (the body is plaintext from the client).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chutes_subnet.inference.base import InvalidRequestError
from chutes_subnet.wire.protocol import CHAT_PATH, INVOKE_PATHS, STREAM_PATHS

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MAX_TOKENS_LIMIT",
    "MAX_MESSAGES",
    "ChatMessage",
    "ChatCompletionRequest",
    "CompletionRequest",
    "InferenceRequest",
    "parse_request",
    "check_path",
    "describe_validation_error",
    "Lenient",
    "MAX_STOP_SEQUENCES",
    "MAX_STOP_CHARS",
    "N_UNSUPPORTED",
]

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096
MAX_MESSAGES = 256
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256
#: The one 400 message for ``n`` other than 1 (safe to answer in plaintext: fixed text).
N_UNSUPPORTED = "n: only n=1 is supported (the embedded backend returns one choice per request)"


class Lenient(BaseModel):
    """Base of request models: unknown fields ignored, frozen."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, value: Any) -> Any:
        if isinstance(value, list):
            texts = []
            for part in value:
                if not (isinstance(part, dict) and part.get("type") == "text"
                        and isinstance(part.get("text"), str)):
                    raise ValueError("only text content parts are supported")
                texts.append(part["text"])
            return "".join(texts)
        return value


class _RequestBase(Lenient):
    model: str | None = None
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS_LIMIT, strict=True)
    stream: bool = False
    n: int | None = Field(1, ge=1, le=1)
    stop: tuple[str, ...] = ()
    temperature: float | None = None  # accepted, ignored: decoding is always greedy
    seed: int | None = None  # accepted, ignored: the weights seed is the backend's

    @field_validator("max_tokens", mode="before")
    @classmethod
    def _default_when_null(cls, value: Any) -> Any:
        return DEFAULT_MAX_TOKENS if value is None else value

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_sequences(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_STOP_SEQUENCES:
            raise ValueError(f"must be a string or a list of 1 to {MAX_STOP_SEQUENCES} strings")
        if not all(isinstance(v, str) and 0 < len(v) <= MAX_STOP_CHARS for v in value):
            raise ValueError(f"each stop sequence must be a string of 1 to {MAX_STOP_CHARS} "
                             "characters")
        return tuple(value)


class ChatCompletionRequest(_RequestBase):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)

    @model_validator(mode="before")
    @classmethod
    def _max_completion_tokens_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_tokens") is None \
                and data.get("max_completion_tokens") is not None:
            data = {**data, "max_tokens": data["max_completion_tokens"]}
        return data


class CompletionRequest(_RequestBase):
    prompt: str

    @field_validator("prompt", mode="before")
    @classmethod
    def _single_prompt(cls, value: Any) -> Any:
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("exactly one prompt is supported")
            return value[0]
        return value


InferenceRequest = ChatCompletionRequest | CompletionRequest


def check_path(path: str) -> str:
    """Return ``path`` if it is an invokable OpenAI path, else raise InvalidRequestError."""
    if path not in INVOKE_PATHS:
        raise InvalidRequestError(f"unsupported path; expected one of {list(INVOKE_PATHS)}")
    return path


def parse_request(path: str, body: Any) -> InferenceRequest:
    """Validate a generation ``body`` for ``path``; raise :class:`InvalidRequestError` on
    any problem (``/v1/embeddings`` bodies: :mod:`chutes_subnet.inference.embeddings`)."""
    if path not in STREAM_PATHS:
        raise InvalidRequestError(f"unsupported path; expected one of {list(STREAM_PATHS)}")
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    if body.get("n", 1) not in (1, None) or isinstance(body.get("n"), bool):
        raise InvalidRequestError(N_UNSUPPORTED, public=N_UNSUPPORTED)
    model = ChatCompletionRequest if path == CHAT_PATH else CompletionRequest
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        # not chained: pydantic's own message quotes the (plaintext) input values
        raise InvalidRequestError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """A field-level summary of the errors without the offending input values."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        location = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{location}: {error['msg']}")
        if len(problems) == 3:
            break
    return "invalid request: " + "; ".join(problems)
