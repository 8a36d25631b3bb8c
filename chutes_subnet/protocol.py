"""The one wire contract shared by miner, validator, gateway and client.

Header names, protocol versions, size limits and the JSON message schemas of every
HTTP endpoint live here and nowhere else. Binary layouts of envelopes are documented
in :mod:`chutes_subnet.e2ee`; the report_data binding in
:mod:`chutes_subnet.attestation.binding`.

Endpoints
---------
Gateway (public, clients talk to it):
    GET  /v1/models                     -> ModelsResponse
    GET  /e2e/instances/{chute_id}      -> InstancesResponse
    POST /e2e/invoke                    E2EE envelope in, E2EE envelope / SSE out
Miner (one instance):
    POST /attest                        AttestRequest (btauth/1 signed) -> AttestResponse
    POST /e2e/invoke                    same headers as the gateway's invoke
    GET  /health, GET /metrics
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# --- E2EE invoke headers (v1 names are those of the public Chutes client) ----------
H_AUTHORIZATION = "Authorization"
H_CHUTE_ID = "X-Chute-Id"
H_INSTANCE_ID = "X-Instance-Id"
H_NONCE = "X-E2E-Nonce"
H_STREAM = "X-E2E-Stream"
H_PATH = "X-E2E-Path"
H_VERSION = "X-E2E-Version"
#: Plaintext usage counts a miner reports for a non-stream response (for metering).
H_USAGE = "X-E2E-Usage"

E2EE_VERSION_V1 = 1
E2EE_VERSION_V2 = 2
SUPPORTED_E2EE_VERSIONS = (E2EE_VERSION_V1, E2EE_VERSION_V2)

#: Paths a client may invoke through an envelope.
INVOKE_PATHS = ("/v1/chat/completions", "/v1/completions")

# --- limits -----------------------------------------------------------------------
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024          # compressed request/response body
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024     # after gunzip
MAX_ATTEST_BODY_BYTES = 4 * 1024
ATTEST_NONCE_BYTES = 32

#: Nonce lifetime told to clients; the server keeps nonces longer (grace for clock
#: skew and in-flight requests) so a nonce never expires server-side first.
NONCE_TTL_CLIENT_SECONDS = 55
NONCE_TTL_SERVER_SECONDS = 90


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


class InstanceInfo(_Model):
    instance_id: str
    e2e_pubkey: str = Field(description="base64 ML-KEM-768 public key (1184 bytes)")
    nonces: list[str]
    e2e_versions: list[int] = Field(default_factory=lambda: [1, 2])


class InstancesResponse(_Model):
    instances: list[InstanceInfo]
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


class ErrorBody(_Model):
    error: str
    reason: str = ""


CHUTE_NAMESPACE = "6f1c3c1e-5b0a-4d57-9d3e-8f6e1c2a7b10"


def chute_id_for_model(model_id: str) -> str:
    """Stable chute UUID for a model name (uuid5 in the subnet's namespace).

    The public Chutes client passes UUID-shaped model names through unchanged and
    resolves other names via ``/v1/models``; both lead to this id.
    """
    import uuid

    return str(uuid.uuid5(uuid.UUID(CHUTE_NAMESPACE), model_id))


def parse_json(data: str | bytes | bytearray) -> Any:
    """``json.loads`` for bytes a peer controls.

    Nesting deeper than the interpreter's recursion limit raises ``RecursionError``
    from ``json``; here it is a ``ValueError`` like any other malformed JSON, so every
    caller's ``except ValueError`` covers it.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nesting too deep") from None
