"""The workload manifest: which model, weights, tokenizer and engine an instance runs.

One manifest per chute release. Schema (every field required, no other field allowed)::

    version           1
    chute_id          the chute this release serves (1..64 of [A-Za-z0-9._-])
    model_id          e.g. "Qwen/Qwen2.5-7B-Instruct" (printable ASCII, <= 128)
    model_revision    e.g. a git commit of the model repository (printable, <= 128)
    weights_digest    "sha256:<64 hex>": Merkle root over the model files (:mod:`.merkle`)
    tokenizer_digest  "sha256:<64 hex>": Merkle root over the tokenizer files
    engine            engine name, e.g. "embedded", "vllm", "sglang"
    engine_version    e.g. "0.8.5"
    image_digest      "sha256:<64 hex>": OCI image the engine runs from
    dtype             e.g. "bfloat16"
    quantization      e.g. "none", "fp8", "awq"
    max_context       integer 1..16777216 (tokens)

Canonical bytes: JSON with sorted keys, no whitespace, ASCII only
(:meth:`WorkloadManifest.canonical_bytes`). Identity: SHA-384 of those bytes
(:meth:`WorkloadManifest.sha384`), the value measured into RTMR3 (:mod:`.eventlog`).
Two manifests are the same release iff their canonical bytes are equal.

Parsing is strict and never raises anything but :class:`ManifestError`: unknown or
missing fields, wrong types, over-long strings and non-canonical digests are refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from chutes_subnet.errors import AttestationError

__all__ = [
    "MANIFEST_VERSION",
    "MAX_MANIFEST_BYTES",
    "ManifestError",
    "WorkloadManifest",
    "load_manifest",
    "parse_manifest",
]

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 4096
_CHUTE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_MAX_CONTEXT = 1 << 24


class ManifestError(AttestationError):
    """A workload manifest is malformed (the message names the field)."""


def _text(value: object, field: str, limit: int = 128) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isascii() \
            or not value.isprintable():
        raise ManifestError(f"manifest field {field} must be 1..{limit} printable ASCII characters")
    return value


def _match(value: object, field: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ManifestError(f"manifest field {field} must be {what}")
    return value


@dataclass(frozen=True)
class WorkloadManifest:
    """One chute release (see module doc). Build with :func:`parse_manifest`."""

    chute_id: str
    model_id: str
    model_revision: str
    weights_digest: str
    tokenizer_digest: str
    engine: str
    engine_version: str
    image_digest: str
    dtype: str
    quantization: str
    max_context: int
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        _match(self.chute_id, "chute_id", _CHUTE_ID, "1..64 of [A-Za-z0-9._-]")
        _text(self.model_id, "model_id")
        _text(self.model_revision, "model_revision")
        for name in ("weights_digest", "tokenizer_digest", "image_digest"):
            _match(getattr(self, name), name, _DIGEST, '"sha256:" and 64 lower-case hex digits')
        for name in ("engine", "engine_version", "dtype", "quantization"):
            _match(getattr(self, name), name, _NAME, "a short name ([A-Za-z0-9._+-], <= 64)")
        ctx = self.max_context
        if not isinstance(ctx, int) or isinstance(ctx, bool) or not 0 < ctx <= _MAX_CONTEXT:
            raise ManifestError(f"manifest field max_context must be an integer 1..{_MAX_CONTEXT}")
        if self.version != MANIFEST_VERSION or isinstance(self.version, bool):
            raise ManifestError(f"manifest version must be {MANIFEST_VERSION}")

    @classmethod
    def from_dict(cls, data: object) -> WorkloadManifest:
        """Strictly build from a JSON object; raises :class:`ManifestError`."""
        if not isinstance(data, dict):
            raise ManifestError("a manifest must be a JSON object")
        names = {f.name for f in fields(cls)}
        unknown = sorted(str(k)[:40] for k in data if k not in names)
        if unknown:
            raise ManifestError(f"unknown manifest fields: {unknown}")
        missing = sorted(names - set(data))
        if missing:
            raise ManifestError(f"missing manifest fields: {missing}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (all fields)."""
        return asdict(self)

    def canonical_bytes(self) -> bytes:
        """Sorted keys, compact separators, ASCII: the bytes that are hashed."""
        return self._canonical

    def sha384(self) -> bytes:
        """SHA-384 of :meth:`canonical_bytes` (48 bytes): what RTMR3 measures."""
        return self._sha384

    @cached_property
    def _canonical(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode("ascii")

    @cached_property
    def _sha384(self) -> bytes:
        return hashlib.sha384(self._canonical).digest()


def parse_manifest(raw: bytes | str) -> WorkloadManifest:
    """Parse manifest JSON (at most :data:`MAX_MANIFEST_BYTES`); raises ``ManifestError``."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"a manifest is JSON of at most {MAX_MANIFEST_BYTES} bytes")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise ManifestError("manifest is not valid JSON") from exc
    return WorkloadManifest.from_dict(data)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def load_manifest(path: str | Path) -> WorkloadManifest:
    """Read and parse a manifest file; raises ``ManifestError``."""
    try:
        raw = Path(path).read_bytes()[: MAX_MANIFEST_BYTES + 1]
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from exc
    return parse_manifest(raw)
