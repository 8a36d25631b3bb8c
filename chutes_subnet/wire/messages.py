"""The JSON message schemas of every HTTP endpoint (pydantic, frozen, extra keys ignored).

Servers build their answers with these models and clients parse answers with them,
so a field's name, type and default is stated once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chutes_subnet.wire.protocol import (
    E2EE_VERSION_V1,
    MAX_FLEET_INSTANCES,
    NONCE_TTL_CLIENT_SECONDS,
    SUPPORTED_E2EE_VERSIONS,
    canonical_instance_url,
)

__all__ = [
    "ModelCard",
    "ModelsResponse",
    "DiscoveredInstance",
    "InstancesResponse",
    "AttestRequest",
    "AttestResponse",
    "ErrorBody",
    "FleetInstance",
    "FleetList",
    "SignedFleet",
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


# --- GET /fleet: the instances one hotkey fronts (signed; see chutes_subnet.wire.fleet_signing) ---

class _Signed(BaseModel):
    """Signed content: exact types, no unknown keys (the signed bytes are re-derived
    from the parsed fields, so nothing may be dropped or coerced on the way)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class FleetInstance(_Signed):
    url: str = Field(description="the instance's own base URL, scheme://ip:port "
                                 "(validators and gateways connect to it directly)")
    instance_id: str | None = Field(
        default=None, pattern="^[0-9a-f]{32}$",
        description="if given, the attested key at url must derive this id")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if canonical_instance_url(value) != value:
            raise ValueError("url must be in canonical form scheme://ip:port")
        return value


class FleetList(_Signed):
    netuid: int = Field(ge=0, le=65535)
    hotkey: str = Field(pattern="^[1-9A-HJ-NP-Za-km-z]{46,48}$",
                        description="the miner hotkey (ss58) that signs the list")
    instances: list[FleetInstance] = Field(min_length=1, max_length=MAX_FLEET_INSTANCES)
    issued_at: int = Field(ge=0, description="unix seconds")
    expires_at: int = Field(ge=0, description="unix seconds; the list is void from then")

    @field_validator("instances")
    @classmethod
    def _distinct(cls, value: list[FleetInstance]) -> list[FleetInstance]:
        if len({i.url for i in value}) != len(value):
            raise ValueError("instances must have distinct urls")
        ids = [i.instance_id for i in value if i.instance_id is not None]
        if len(set(ids)) != len(ids):
            raise ValueError("instances must have distinct instance ids")
        return value


class SignedFleet(_Signed):
    v: int = Field(ge=1, le=1)
    fleet: FleetList
    signature: str = Field(pattern="^[0-9a-f]{128}$",
                           description="hex sr25519 signature by fleet.hotkey")
