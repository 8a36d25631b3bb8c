"""The evidence a miner returns to a challenge, and its wire form.

Wire form (the ``tdx_quote``/``gpu_evidence``/``simulated`` fields of
:class:`chutes_subnet.wire.messages.AttestResponse`)::

    {"tdx_quote": base64(quote bytes), "gpu_evidence": [entry, ...], "simulated": bool,
     "event_log": [event, ...], "workload_manifest": {manifest} | null}

``simulated`` is only a claim by the miner; the verifier decides from the quote itself.
``event_log`` (RTMR3 events, :mod:`.eventlog`) and ``workload_manifest``
(:mod:`.manifest`) are only bounded here; the verifier's workload step parses them so
each defect gets its own reason code.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from chutes_subnet.errors import AttestationError, GpuEvidenceFormatError, QuoteFormatError

from .gpu import MAX_GPUS
from .quote import MAX_QUOTE_BYTES

__all__ = ["MAX_EVENT_LOG_BYTES", "MAX_GPU_ENTRY_BYTES", "Evidence", "EvidenceFormatError"]

MAX_GPU_ENTRY_BYTES = 64 * 1024
MAX_EVENT_LOG_BYTES = 64 * 1024


class EvidenceFormatError(AttestationError):
    """The evidence message itself (not the quote or GPU data inside) is malformed."""


@dataclass(frozen=True)
class Evidence:
    """A TDX quote plus NVIDIA GPU evidence entries, as produced by a provider."""

    tdx_quote: bytes
    gpu_evidence: list[dict[str, Any]] = field(default_factory=list)
    simulated: bool = False
    event_log: list[dict[str, Any]] = field(default_factory=list)
    workload_manifest: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict matching ``AttestResponse``'s evidence fields."""
        return {
            "tdx_quote": base64.b64encode(self.tdx_quote).decode("ascii"),
            "gpu_evidence": [dict(e) for e in self.gpu_evidence],
            "simulated": bool(self.simulated),
            "event_log": [dict(e) for e in self.event_log],
            "workload_manifest": dict(self.workload_manifest)
            if self.workload_manifest is not None else None,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Evidence:
        """Parse and bound the wire form; raises ``AttestationError`` subclasses."""
        if not isinstance(d, dict):
            raise EvidenceFormatError("evidence must be a JSON object")
        quote_b64 = d.get("tdx_quote")
        if not isinstance(quote_b64, str) or len(quote_b64) > (MAX_QUOTE_BYTES * 4) // 3 + 4:
            raise QuoteFormatError("tdx_quote must be a base64 string of bounded size")
        try:
            quote = base64.b64decode(quote_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise QuoteFormatError("tdx_quote is not valid base64") from exc
        if not quote:
            raise QuoteFormatError("tdx_quote is empty")
        gpus = d.get("gpu_evidence", [])
        if not isinstance(gpus, list) or len(gpus) > MAX_GPUS:
            raise GpuEvidenceFormatError(f"gpu_evidence must be a list of at most {MAX_GPUS}")
        for entry in gpus:
            if not isinstance(entry, dict):
                raise GpuEvidenceFormatError("each gpu_evidence entry must be an object")
            try:
                size = len(json.dumps(entry))
            except (TypeError, ValueError) as exc:
                raise GpuEvidenceFormatError("gpu_evidence entry is not JSON") from exc
            if size > MAX_GPU_ENTRY_BYTES:
                raise GpuEvidenceFormatError("gpu_evidence entry too large")
        simulated = d.get("simulated", False)
        if not isinstance(simulated, bool):
            raise EvidenceFormatError("simulated must be a boolean")
        events, manifest = d.get("event_log", []), d.get("workload_manifest")
        if not isinstance(events, list) or not (manifest is None or isinstance(manifest, dict)):
            raise EvidenceFormatError("event_log must be a list and workload_manifest an object")
        try:
            size = len(json.dumps([events, manifest]))
        except (TypeError, ValueError, RecursionError) as exc:
            raise EvidenceFormatError("event_log / workload_manifest are not JSON") from exc
        if size > MAX_EVENT_LOG_BYTES:
            raise EvidenceFormatError("event_log / workload_manifest too large")
        return cls(quote, [dict(e) for e in gpus], simulated, list(events),
                   dict(manifest) if manifest is not None else None)
