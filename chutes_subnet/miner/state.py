"""What one running instance holds: its public identity and its dependencies."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from chutes_subnet.attestation.providers.evidence_provider import EvidenceProvider
from chutes_subnet.auth import ValidatorGate
from chutes_subnet.e2ee import KeyPair
from chutes_subnet.inference import Backend
from chutes_subnet.miner.config import MinerConfig
from chutes_subnet.miner.limits import ConcurrencyLimiter
from chutes_subnet.miner.metrics import MinerMetrics
from chutes_subnet.nonces import SeenNonceCache
from chutes_subnet.receipts import ReceiptSigner

__all__ = ["InstanceIdentity", "MinerState", "load_bucket"]

log = logging.getLogger("chutes_subnet.miner")


@dataclass(frozen=True)
class InstanceIdentity:
    """Public facts of this instance (``app.state.instance``). No private key here."""

    instance_id: str
    chute_id: str
    model_id: str
    hotkey: str
    e2e_pubkey: str
    e2e_fingerprint: str
    simulated: bool
    e2e_versions: tuple[int, ...] = (1, 2)
    #: base64 Ed25519 key that signs answer receipts (bound by /attest, layout v2)
    receipt_pubkey: str = ""






@dataclass
class MinerState:
    """Dependencies shared by the endpoints of one app."""

    config: MinerConfig
    instance: InstanceIdentity
    keypair: KeyPair
    backend: Backend
    provider: EvidenceProvider
    gate: ValidatorGate | None
    seen: SeenNonceCache
    limiter: ConcurrencyLimiter
    metrics: MinerMetrics
    #: signs every answer's receipt; generated with the E2EE key, never serialised
    receipt_signer: ReceiptSigner | None = None
    draining: bool = False

    def describe(self) -> dict[str, Any]:
        """Public status for ``GET /health``."""
        inst = self.instance
        return {
            "status": "draining" if self.draining else "ok",
            "instance_id": inst.instance_id,
            "chute_id": inst.chute_id,
            "model": inst.model_id,
            "hotkey": inst.hotkey,
            "e2e_fingerprint": inst.e2e_fingerprint,
            "e2e_versions": list(inst.e2e_versions),
            "simulated_tee": inst.simulated,
            "load": load_bucket(self.limiter.in_flight, self.limiter.capacity),
        }


def load_bucket(in_flight: int, capacity: int) -> str:
    """The public, coarse load of an instance: "low" (under half its slots busy),
    "high" (half or more) or "full" (every slot). Anonymous callers of ``/health`` must
    not count requests one by one; exact counts are on the private metrics port
    (``chutes_miner_in_flight`` / ``chutes_miner_capacity``), which the scaler reads."""
    if in_flight >= capacity:
        return "full"
    return "high" if 2 * in_flight >= capacity else "low"
