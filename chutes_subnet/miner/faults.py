"""DEV/TEST ONLY: deliberate misbehaviours so validators can test that they catch them.

Available only with the simulated TEE (checked by :class:`MinerConfig` and again by
``create_app`` against the actual provider). Each fault is a wrapper that
``create_app`` installs around the backend, the evidence provider or the invoke
endpoint only when a fault is configured, so the production path has no fault checks:

* ``wrong-tokens``   every generated character is shifted (same length, same usage);
* ``stall``          ``/e2e/invoke`` never answers (until the caller gives up);
* ``debug-quote``    quotes carry the TDX DEBUG attribute;
* ``foreign-hotkey`` report_data binds :data:`FOREIGN_HOTKEY` instead of ours.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chutes_subnet.asgi import Receive, Scope, Send
from chutes_subnet.attestation.providers.evidence_provider import EvidenceProvider
from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.inference import Backend

__all__ = ["FOREIGN_HOTKEY", "corrupt_text", "corrupt_chunk", "apply_provider_fault",
           "apply_backend_fault", "apply_invoke_fault"]

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

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                receipt_pubkey: bytes | None = None) -> Evidence:
        return self.inner.collect(nonce, e2e_pubkey, FOREIGN_HOTKEY, receipt_pubkey)


class _DebugQuote:
    def __init__(self, inner: SimulatedProvider) -> None:
        self.inner = inner

    def collect(self, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                receipt_pubkey: bytes | None = None) -> Evidence:
        device = self.inner.device
        report_data = build_report_data(nonce, e2e_pubkey, self.inner.bind_hotkey or hotkey_ss58,
                                        receipt_pubkey)
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


class _WrongTokens:
    """Backend whose generated text is corrupted (same length, same usage)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.model_id = inner.model_id

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return corrupt_chunk(await self.inner.complete(path, body))

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        chunks = self.inner.stream(path, body)
        try:
            async for item in chunks:
                yield corrupt_chunk(item)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def aclose(self) -> None:
        await self.inner.aclose()


def apply_backend_fault(fault: str | None, backend: Backend) -> Backend:
    """Wrap ``backend`` for ``wrong-tokens``; other faults leave it alone."""
    return _WrongTokens(backend) if fault == "wrong-tokens" else backend


class _Stall:
    """An invoke endpoint that reads the request and never answers (until the caller leaves)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass


def apply_invoke_fault(fault: str | None, endpoint: Any) -> Any:
    """Replace the invoke endpoint for ``stall``; other faults leave it alone."""
    return _Stall() if fault == "stall" else endpoint
