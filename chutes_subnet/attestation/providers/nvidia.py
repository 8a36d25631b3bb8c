"""NVIDIA GPU evidence on a real machine, through NVIDIA's own SDK."""

from __future__ import annotations

import logging
from typing import Any

from chutes_subnet.errors import AttestationError

__all__ = ["NvidiaGpuProvider"]

log = logging.getLogger(__name__)


class NvidiaGpuProvider:
    """GPU evidence through NVIDIA's ``nv-local-gpu-verifier`` package (lazy import)."""

    def __init__(self) -> None:
        try:
            from verifier import cc_admin  # type: ignore[import-not-found]
        except ImportError as exc:
            raise AttestationError("NVIDIA evidence needs the nv-local-gpu-verifier package "
                                   "(pip install nv-local-gpu-verifier) and the NVIDIA driver") from exc
        self._cc_admin = cc_admin

    def collect(self, nonce: bytes) -> list[dict[str, Any]]:
        """One entry per GPU, each made for ``nonce`` (32 bytes)."""
        try:
            entries = self._cc_admin.collect_gpu_evidence_remote(nonce.hex())
        except Exception as exc:  # foreign SDK, translated here
            raise AttestationError("NVIDIA GPU evidence collection failed") from exc
        return [dict(e, nonce=nonce.hex(), **self._modes()) for e in entries]

    @staticmethod
    def _modes() -> dict[str, bool]:
        """CC / DevTools state from NVML (unsigned: lets validators refuse honest
        misconfiguration; the signed check is the RIM comparison)."""
        try:
            from verifier.nvml import NvmlHandler  # type: ignore[import-not-found]

            return {"cc_enabled": bool(NvmlHandler.is_cc_enabled()),
                    "devtools": bool(NvmlHandler.is_cc_dev_mode())}
        except Exception:  # noqa: BLE001 - foreign SDK; the state is then not stated
            log.warning("could not read the GPU CC/DevTools state from NVML")
            return {}
