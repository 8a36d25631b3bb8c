"""Wire constants shared by miner, validator, gateway and client: versions, paths, limits.

Endpoints
---------
Gateway (public, clients talk to it):
    GET  /v1/models                     -> ModelsResponse
    GET  /e2e/instances/{chute_id}      -> InstancesResponse
    POST /e2e/invoke                    E2EE envelope in, E2EE envelope / SSE out
    POST /e2e/attest/{instance_id}      AttestRequest (the client's own nonce) -> the
                                        miner's AttestResponse, relayed verbatim
    POST /e2e/collateral                raw TDX quote -> DCAP collateral JSON (cached)
Miner (one instance):
    POST /attest                        AttestRequest (btauth/1 signed) -> AttestResponse
    POST /e2e/invoke                    same headers as the gateway's invoke
    GET  /health, GET /metrics

Message schemas are in :mod:`chutes_subnet.wire.messages`, header names and their
parsers in :mod:`chutes_subnet.wire.headers`, the client's sealed call in
:mod:`chutes_subnet.wire.call`. Binary layouts of envelopes are documented in
:mod:`chutes_subnet.e2ee`; the report_data binding in
:mod:`chutes_subnet.attestation.binding`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from chutes_subnet.errors import EnvelopeFormatError

__all__ = [
    "E2EE_VERSION_V1",
    "E2EE_VERSION_V2",
    "SUPPORTED_E2EE_VERSIONS",
    "INVOKE_PATH",
    "INVOKE_PATHS",
    "STREAM_PATHS",
    "REFUSED_PATHS",
    "CHAT_PATH",
    "COMPLETIONS_PATH",
    "EMBEDDINGS_PATH",
    "MAX_ENVELOPE_BYTES",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_ATTEST_BODY_BYTES",
    "ATTEST_NONCE_BYTES",
    "MAX_ATTEST_RESPONSE_BYTES",
    "MAX_COLLATERAL_BYTES",
    "NONCE_TTL_CLIENT_SECONDS",
    "NONCE_TTL_SERVER_SECONDS",
    "CHUTE_NAMESPACE",
    "chute_id_for_model",
    "parse_json",
    "KEM_CIPHERTEXT_BYTES",
    "request_kem_ciphertext",
]

E2EE_VERSION_V1 = 1
E2EE_VERSION_V2 = 2
SUPPORTED_E2EE_VERSIONS = (E2EE_VERSION_V1, E2EE_VERSION_V2)

#: The endpoint that takes an envelope (same path on the gateway and the miner).
INVOKE_PATH = "/e2e/invoke"
#: OpenAI paths served through an envelope (and only through one: never plaintext).
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
#: Paths a client may invoke through an envelope.
INVOKE_PATHS = (CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH)
#: Invokable paths whose answer may be a stream (embeddings never are).
STREAM_PATHS = (CHAT_PATH, COMPLETIONS_PATH)
#: OpenAI paths that are deliberately not served, with the reason a client shows.
#: ``/v1/responses`` keeps conversation state on the server (``previous_response_id``,
#: ``store``, background runs): that state would have to outlive one instance and its
#: key, i.e. live outside the attested TEE. Use ``/v1/chat/completions``.
REFUSED_PATHS = {
    "/v1/responses": "the Responses API keeps conversation state on the server, outside "
                     "the attested instance; use /v1/chat/completions",
}

# --- limits -----------------------------------------------------------------------
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024          # compressed request/response body
MAX_DECOMPRESSED_BYTES = 16 * 1024 * 1024     # after gunzip
MAX_ATTEST_BODY_BYTES = 4 * 1024
#: largest attestation answer (quote + 8 GPU evidence entries + metadata) a verifier reads
MAX_ATTEST_RESPONSE_BYTES = 1024 * 1024
#: largest DCAP collateral document a client reads from the gateway
MAX_COLLATERAL_BYTES = 256 * 1024
#: validator statements one ``/e2e/statements`` answer may carry (one per validator counts)
MAX_STATEMENTS = 64
#: bytes of one answer carrying statements (64 statements of ~700 bytes, with room)
MAX_STATEMENTS_BYTES = 64 * 1024
ATTEST_NONCE_BYTES = 32

#: Nonce lifetime told to clients; the server keeps nonces longer (grace for clock
#: skew and in-flight requests) so a nonce never expires server-side first.
NONCE_TTL_CLIENT_SECONDS = 55
NONCE_TTL_SERVER_SECONDS = 90

CHUTE_NAMESPACE = "6f1c3c1e-5b0a-4d57-9d3e-8f6e1c2a7b10"


def chute_id_for_model(model_id: str) -> str:
    """Stable chute UUID for a model name (uuid5 in the subnet's namespace).

    The public Chutes client passes UUID-shaped model names through unchanged and
    resolves other names via ``/v1/models``; both lead to this id.
    """
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


#: ML-KEM-768 ciphertext size (the e2ee package's KEM uses this constant too).
KEM_CIPHERTEXT_BYTES = 1088
#: Where a request envelope's KEM ciphertext starts: v1 at byte 0, v2 after its version byte.
_KEM_OFFSETS = {E2EE_VERSION_V1: 0, E2EE_VERSION_V2: 1}


def request_kem_ciphertext(version: int, body: bytes) -> bytes:
    """The KEM ciphertext of a request envelope: what names its key schedule (replay ids,
    receipts). Pure framing, so the keyless gateway reads it without the e2ee package."""
    start = _KEM_OFFSETS.get(version)
    if start is None or len(body) < start + KEM_CIPHERTEXT_BYTES:
        raise EnvelopeFormatError("request envelope too short for its KEM ciphertext")
    return bytes(body[start : start + KEM_CIPHERTEXT_BYTES])
