"""Every HTTP header of the wire contract, and the parsers of the structured ones.

Names are written here once (v1 names are those of the public Chutes client); code
elsewhere uses the constants. ASGI delivers header names in lower case and httpx /
aiohttp look them up case-insensitively, so :meth:`InvokeHeaders.parse` reads a
mapping keyed by lower-case names (any case-insensitive mapping works too).

* :class:`InvokeHeaders` — the routing headers of ``POST /e2e/invoke``: ``parse``
  on the gateway and the miner (a bad header is a :class:`~chutes_subnet.errors.
  HeaderError` carrying the refusal's reason code), ``to_headers`` on the client,
  the gateway's forwarding and the validator's benchmark.
* :class:`Usage` — the token counts a miner reports in ``X-E2E-Usage`` (and in the
  stream's usage events): the one parser of usage, bounded integers only; anything
  else is a :class:`~chutes_subnet.errors.UsageError`, never a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from chutes_subnet.errors import HeaderError, UsageError
from chutes_subnet.wire.context import PADDING_NONE, PADDING_SCHEMES, RequestContext
from chutes_subnet.wire.protocol import (
    E2EE_VERSION_V1,
    E2EE_VERSION_V2,
    INVOKE_PATHS,
    STREAM_PATHS,
    SUPPORTED_E2EE_VERSIONS,
    parse_json,
)

__all__ = [
    "H_AUTHORIZATION",
    "H_CONTENT_TYPE",
    "H_RETRY_AFTER",
    "H_CHUTE_ID",
    "H_INSTANCE_ID",
    "H_NONCE",
    "H_STREAM",
    "H_PATH",
    "H_VERSION",
    "H_PADDING",
    "H_RECEIPT",
    "H_USAGE",
    "H_RETRY",
    "RETRY_INSTANCE",
    "ENVELOPE_MEDIA_TYPE",
    "MAX_ROUTING_HEADER_CHARS",
    "MAX_USAGE_HEADER_CHARS",
    "MAX_USAGE_TOKENS",
    "InvokeHeaders",
    "Usage",
    "parse_usage",
    "parse_usage_header",
]

H_AUTHORIZATION = "Authorization"
H_CONTENT_TYPE = "Content-Type"
H_RETRY_AFTER = "Retry-After"
# --- E2EE invoke headers -------------------------------------------------------------
H_CHUTE_ID = "X-Chute-Id"
H_INSTANCE_ID = "X-Instance-Id"
H_NONCE = "X-E2E-Nonce"
H_STREAM = "X-E2E-Stream"
H_PATH = "X-E2E-Path"
H_VERSION = "X-E2E-Version"
#: v2 padding negotiation ("1" = Padmé envelopes and bucketed stream frames), bound into
#: the AAD; absent or "0" = unpadded.
H_PADDING = "X-E2E-Padding"
#: The instance's signed receipt of a non-stream answer (:mod:`chutes_subnet.receipts`).
H_RECEIPT = "X-E2E-Receipt"
#: Usage counts of a non-stream answer: informative from a miner (never billed: the
#: gateway bills the receipt's counts); the client sets it from the verified receipt.
H_USAGE = "X-E2E-Usage"
#: Set by the gateway when the chosen instance failed before any byte: retry elsewhere.
H_RETRY = "X-E2E-Retry"
RETRY_INSTANCE = "instance"

#: Content type of a request or non-stream response envelope.
ENVELOPE_MEDIA_TYPE = "application/octet-stream"
MAX_ROUTING_HEADER_CHARS = 128
MAX_USAGE_HEADER_CHARS = 4096
#: Largest token count a usage report may state (far above any real request).
MAX_USAGE_TOKENS = 1 << 40
_VERSION_VALUES = {str(v): v for v in SUPPORTED_E2EE_VERSIONS}
_PADDING_VALUES = {str(p): p for p in PADDING_SCHEMES}


def _required(h: Mapping[str, str], name: str) -> str:
    value = h.get(name.lower(), "")
    if not value or len(value) > MAX_ROUTING_HEADER_CHARS or not value.isprintable():
        raise HeaderError("bad_header", f"missing or malformed {name} header")
    return value


@dataclass(frozen=True, slots=True)
class InvokeHeaders:
    """The routing headers of ``POST /e2e/invoke`` (gateway and miner read the same)."""

    chute_id: str
    instance_id: str
    nonce: str
    path: str
    stream: bool
    version: int = E2EE_VERSION_V1
    #: False when ``X-E2E-Version`` was absent (a v1 client that predates the header);
    #: such a request is forwarded without the header too.
    version_explicit: bool = True
    #: ``X-E2E-Padding`` (v2 only): the padding scheme, bound into the v2 AAD
    padding: int = PADDING_NONE

    def context(self) -> RequestContext:
        """The request context these headers describe (the v2 AAD, a receipt's binding)."""
        return RequestContext(self.chute_id, self.instance_id, self.nonce, self.path,
                              self.stream, self.padding)

    @classmethod
    def parse(cls, h: Mapping[str, str]) -> InvokeHeaders:
        """Validate the headers (lower-case keys); :class:`HeaderError` with reason
        ``bad_header`` / ``bad_path`` / ``bad_version`` on the first bad one."""
        chute_id = _required(h, H_CHUTE_ID)
        instance_id = _required(h, H_INSTANCE_ID)
        nonce = _required(h, H_NONCE)
        path = h.get(H_PATH.lower(), "")
        if path not in INVOKE_PATHS:
            raise HeaderError("bad_path", f"{H_PATH} is not an invokable path")
        stream_flag = h.get(H_STREAM.lower(), "false").lower()
        if stream_flag not in ("true", "false"):
            raise HeaderError("bad_header", f"{H_STREAM} must be true or false")
        if stream_flag == "true" and path not in STREAM_PATHS:
            raise HeaderError("bad_header", f"{H_STREAM} must be false for {path}")
        raw = h.get(H_VERSION.lower())
        if raw is not None and raw not in _VERSION_VALUES:
            raise HeaderError("bad_version", f"unsupported {H_VERSION}")
        version = _VERSION_VALUES[raw] if raw is not None else E2EE_VERSION_V1
        padding = _PADDING_VALUES.get(h.get(H_PADDING.lower(), "0"))
        if padding is None or (padding != PADDING_NONE and version != E2EE_VERSION_V2):
            raise HeaderError("bad_header", f"{H_PADDING} must be 0 or 1 (1 only with v2)")
        return cls(chute_id, instance_id, nonce, path, stream_flag == "true", version,
                   raw is not None, padding)

    def to_headers(self) -> dict[str, str]:
        """The headers to send (with the envelope's content type)."""
        out = {
            H_CONTENT_TYPE: ENVELOPE_MEDIA_TYPE,
            H_CHUTE_ID: self.chute_id,
            H_INSTANCE_ID: self.instance_id,
            H_NONCE: self.nonce,
            H_STREAM: "true" if self.stream else "false",
            H_PATH: self.path,
        }
        if self.version_explicit:
            out[H_VERSION] = str(self.version)
        if self.padding != PADDING_NONE:
            out[H_PADDING] = str(self.padding)
        return out


class Usage(NamedTuple):
    """Token counts of one answer, each in ``[0, MAX_USAGE_TOKENS]``."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_header(self) -> str:
        """The ``X-E2E-Usage`` value (compact JSON, ASCII)."""
        p, c = int(self.prompt_tokens), int(self.completion_tokens)  # the JSON json.dumps writes
        return f'{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{p + c}}}'


def _count(obj: Mapping[object, object], key: str) -> int:
    value = obj.get(key, 0)
    if type(value) is not int or not 0 <= value <= MAX_USAGE_TOKENS:
        raise UsageError(f"usage {key} is not an integer in [0, 2^40]")
    return value


def parse_usage(obj: object) -> Usage:
    """A usage object (``{"prompt_tokens": int, "completion_tokens": int, ...}``; a
    missing count is 0, other keys are ignored) -> :class:`Usage`, else :class:`UsageError`."""
    if not isinstance(obj, dict):
        raise UsageError("usage is not a JSON object")
    return Usage(_count(obj, "prompt_tokens"), _count(obj, "completion_tokens"))


def parse_usage_header(value: str | None) -> Usage | None:
    """An ``X-E2E-Usage`` value -> :class:`Usage`; None when absent; :class:`UsageError`
    when malformed (too long, not JSON, or counts out of range)."""
    if value is None:
        return None
    if not value or len(value) > MAX_USAGE_HEADER_CHARS:
        raise UsageError(f"{H_USAGE} is empty or too long")
    try:
        obj = parse_json(value)
    except ValueError:
        raise UsageError(f"{H_USAGE} is not JSON") from None
    return parse_usage(obj)
