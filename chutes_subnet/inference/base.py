"""The backend interface every inference engine implements, its constants and errors.

A backend turns one decrypted OpenAI request (``path`` + JSON ``body``) into an
OpenAI response object, or into a stream of OpenAI chunk objects. It runs inside the
TEE and sees plaintext; it never logs request or response content, and its error
messages never contain it.

Errors (both derive from :class:`chutes_subnet.errors.InferenceError`)::

    InferenceError
    ├── InvalidRequestError   the request is unacceptable (also a ValueError) -> HTTP 400
    └── UpstreamError         the upstream server failed, timed out or answered garbage
                              (``status`` holds its HTTP status when there was one) -> 502
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from chutes_subnet.errors import InferenceError

__all__ = [
    "DEFAULT_MODEL_ID",
    "DEFAULT_SEED",
    "Backend",
    "InvalidRequestError",
    "UpstreamError",
]

#: Model name the embedded backend reports in /v1/models and in responses.
DEFAULT_MODEL_ID = "chutes-subnet/tiny-byte-lm"
#: Seed of the embedded model's weights unless the operator picks another.
DEFAULT_SEED = 1234


class InvalidRequestError(InferenceError, ValueError):
    """The request body or path is not acceptable; the message says which field.

    ``public``: a fixed, code-chosen sentence (never built from the request) that the
    miner may answer in plaintext instead of its generic 400 message, e.g. for an
    unsupported parameter such as ``n > 1``.
    """

    def __init__(self, message: str, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public


class UpstreamError(InferenceError):
    """The OpenAI-compatible upstream failed; ``status`` is its HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class Backend(Protocol):
    """An inference engine serving ``/v1/chat/completions``, ``/v1/completions`` and
    (non-stream) ``/v1/embeddings``."""

    model_id: str

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Full OpenAI response object (``chat.completion`` / ``text_completion`` / the
        ``list`` of embeddings) including ``usage``."""
        ...

    def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """OpenAI chunk objects, one per token (or upstream chunk); ``finish_reason``
        on the last token chunk; then one chunk with ``choices=[]`` and ``usage``."""
        ...

    async def aclose(self) -> None:
        """Release threads, sessions and connections. Idempotent."""
        ...
