"""One failure type for everything a miner can get wrong, and the HTTP error adapter.

httpx exceptions are translated here and nowhere else, into the reason kinds of
:mod:`chutes_subnet.validator.results`. Messages are safe to persist and to show an
operator: they name the failed check, never plaintext, keys or nonces.
"""

from __future__ import annotations

import httpx

from chutes_subnet.errors import ChutesSubnetError

from .results import REASON_KINDS, AttestationSummary

__all__ = ["EvaluationFailure", "from_http_error", "read_bounded"]


class EvaluationFailure(ChutesSubnetError):
    """A miner failed one step of its evaluation. ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str,
                 attestation: AttestationSummary | None = None) -> None:
        if reason.split(":", 1)[0] not in REASON_KINDS:
            raise ValueError(f"unknown failure kind in {reason!r}")
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.attestation = attestation


def from_http_error(exc: httpx.HTTPError, what: str) -> EvaluationFailure:
    """Map an httpx error raised while doing ``what`` to a failure."""
    if isinstance(exc, httpx.TimeoutException):
        return EvaluationFailure("timeout", f"{what}: no answer in time ({type(exc).__name__})")
    if isinstance(exc, (httpx.ConnectError, httpx.NetworkError)):
        return EvaluationFailure("unreachable", f"{what}: connection failed ({type(exc).__name__})")
    return EvaluationFailure("bad_response", f"{what}: HTTP exchange failed ({type(exc).__name__})")


async def read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    """Read a streamed response body, refusing more than ``limit`` bytes."""
    buf = bytearray()
    async for chunk in response.aiter_raw():
        buf += chunk
        if len(buf) > limit:
            raise EvaluationFailure("bad_response", f"{what}: body exceeds {limit} bytes")
    return bytes(buf)
