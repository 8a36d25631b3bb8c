"""DEV/TEST ONLY: deliberate misbehaviours so validators can test that they catch them.

Available only with the simulated TEE (checked by :class:`MinerConfig` and again by
``create_app`` against the actual provider):

* ``wrong-tokens``   every generated character is shifted (same length, same usage);
* ``stall``          ``/e2e/invoke`` never answers (until the caller gives up);
* ``debug-quote``    quotes carry the TDX DEBUG attribute;
* ``foreign-hotkey`` report_data binds :data:`FOREIGN_HOTKEY` instead of ours.
"""

from __future__ import annotations

from typing import Any

from chutes_subnet.attestation import Evidence, EvidenceProvider, SimulatedProvider
from chutes_subnet.attestation.binding import build_report_data

__all__ = ["FOREIGN_HOTKEY", "corrupt_text", "corrupt_chunk", "apply_provider_fault"]

#: A well-known development address (//Alice): certainly not this miner's hotkey.
FOREIGN_HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def corrupt_text(text: str) -> str:
    """Shift every printable ASCII character by one (wraps); others unchanged."""
    return "".join(chr((ord(c) - 31) % 95 + 32) if 32 <= ord(c) < 127 else c for c in text)


def corrupt_chunk(obj: dict[str, Any]) -> dict[str, Any]:
    """Corrupt the generated text of a completion or chunk object, in place."""
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            choice["text"] = corrupt_text(choice["text"])
        for part in ("message", "delta"):
            inner = choice.get(part)
            if isinstance(inner, dict) and isinstance(inner.get("content"), str):
                inner["content"] = corrupt_text(inner["content"])
    return obj


class _ForeignHotkey:
    def __init__(self, inner: EvidenceProvider) -> None:
        self.inner = inner

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> Evidence:
        return self.inner.collect(nonce, e2e_pubkey, FOREIGN_HOTKEY)


class _DebugQuote:
    def __init__(self, inner: SimulatedProvider) -> None:
        self.inner = inner

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> Evidence:
        device = self.inner.device
        report_data = build_report_data(nonce, e2e_pubkey, self.inner.bind_hotkey or hotkey_ss58)
        return Evidence(device.quote(report_data, debug=True), device.gpu_evidence(nonce),
                        simulated=True)


def apply_provider_fault(fault: str | None, provider: EvidenceProvider) -> EvidenceProvider:
    """Wrap ``provider`` for the attestation faults; other faults leave it alone."""
    if fault == "foreign-hotkey":
        return _ForeignHotkey(provider)
    if fault == "debug-quote":
        if not isinstance(provider, SimulatedProvider):
            raise ValueError("the debug-quote fault needs the simulated provider")
        return _DebugQuote(provider)
    return provider
