"""The JSON message schemas of every HTTP endpoint (pydantic, frozen, extra keys ignored).

Servers build their answers with these models and clients parse answers with them,
so a field's name, type and default is stated once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chutes_subnet.wire.protocol import (
    E2EE_VERSION_V1,
    NONCE_TTL_CLIENT_SECONDS,
    SUPPORTED_E2EE_VERSIONS,
)

__all__ = [
    "ModelCard",
    "ModelsResponse",
    "DiscoveredInstance",
    "InstancesResponse",
    "AttestRequest",
    "AttestResponse",
    "ErrorBody",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ModelCard(_Model):
    id: str
    chute_id: str
    object: str = "model"
    owned_by: str = "chutes-subnet"


class ModelsResponse(_Model):
    object: str = "list"
    data: list[ModelCard]


class DiscoveredInstance(_Model):
    instance_id: str
    e2e_pubkey: str = Field(description="base64 ML-KEM-768 public key (1184 bytes)")
    nonces: list[str]
    #: An instance that announces no versions predates the field: it speaks v1 only.
    e2e_versions: list[int] = Field(default_factory=lambda: [E2EE_VERSION_V1])
    simulated: bool = Field(default=False, description="attested with SIMULATED (forgeable) "
                            "evidence by a development validator: never confidential")
    #: base64 Ed25519 key that signs the instance's answer receipts ("" = none attested)
    receipt_pubkey: str = ""


class InstancesResponse(_Model):
    instances: list[DiscoveredInstance]
    nonce_expires_in: int = NONCE_TTL_CLIENT_SECONDS


class AttestRequest(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True)
    nonce: str = Field(description="hex of 32 fresh random bytes chosen by the verifier",
                       min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")


class AttestResponse(_Model):
    instance_id: str
    chute_id: str
    model: str
    hotkey: str = Field(description="miner hotkey ss58 bound into report_data[32:64]")
    e2e_pubkey: str = Field(description="base64 ML-KEM-768 public key")
    tdx_quote: str = Field(description="base64 TDX quote (v4/v5)")
    gpu_evidence: list[dict[str, Any]] = Field(default_factory=list)
    simulated: bool = False
    e2e_versions: list[int] = Field(default_factory=lambda: list(SUPPORTED_E2EE_VERSIONS),
                                    description="E2EE protocol versions this instance serves")
    event_log: list[dict[str, Any]] = Field(
        default_factory=list, description="RTMR3 runtime events (attestation.eventlog)")
    workload_manifest: dict[str, Any] | None = Field(
        default=None, description="the workload manifest measured into RTMR3")
    receipt_pubkey: str | None = Field(
        default=None, max_length=64,
        description="base64 Ed25519 receipt key; present means report_data layout v2")


class ErrorBody(_Model):
    error: str
    reason: str = ""
