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
    GET  /fleet                         SignedFleet: the instances this hotkey fronts,
                                        signed by the hotkey (:mod:`.fleet_signing`)
    GET  /health, GET /metrics

Message schemas are in :mod:`chutes_subnet.wire.messages`, header names and their
parsers in :mod:`chutes_subnet.wire.headers`, the client's sealed call in
:mod:`chutes_subnet.wire.call`. Binary layouts of envelopes are documented in
:mod:`chutes_subnet.e2ee`; the report_data binding in
:mod:`chutes_subnet.attestation.verify.binding`.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

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
    "FLEET_PATH",
    "MAX_FLEET_INSTANCES",
    "MAX_FLEET_BYTES",
    "MAX_FLEET_URL_CHARS",
    "MAX_FLEET_VALIDITY_SECONDS",
    "FLEET_CLOCK_SKEW_SECONDS",
    "MAX_ATTEST_RESPONSE_BYTES",
    "MAX_COLLATERAL_BYTES",
    "NONCE_TTL_CLIENT_SECONDS",
    "NONCE_TTL_SERVER_SECONDS",
    "CHUTE_NAMESPACE",
    "chute_id_for_model",
    "parse_json",
    "canonical_instance_url",
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

#: where a miner's published endpoint serves its signed instance list
FLEET_PATH = "/fleet"
#: instances one hotkey may list (validators may evaluate fewer: --fleet.max_instances)
MAX_FLEET_INSTANCES = 64
#: bytes of one signed instance list (64 entries of ~330 bytes, with room)
MAX_FLEET_BYTES = 32 * 1024
#: characters of one instance URL
MAX_FLEET_URL_CHARS = 256
#: the longest validity an instance list may claim (expires_at - issued_at)
MAX_FLEET_VALIDITY_SECONDS = 3600
#: how far in the future a list's issued_at may be (clock skew between hosts)
FLEET_CLOCK_SKEW_SECONDS = 60

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


_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_instance_url(url: str) -> str:
    """``scheme://ip:port`` of an instance's base URL; ``ValueError`` names the defect.

    http or https; an IP address like the axon on chain (IPv6 in brackets), never a
    name: a name would be resolved inside each validator's and gateway's own network;
    no user info, path, query or fragment (a trailing ``/`` is dropped); the port is
    made explicit, so one address has one spelling and a list cannot name an
    instance twice unnoticed.
    """
    if not isinstance(url, str) or not 0 < len(url) <= MAX_FLEET_URL_CHARS:
        raise ValueError(f"instance URL must be 1..{MAX_FLEET_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or c == "\\" for c in url):
        raise ValueError("instance URL must be ASCII without spaces or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("instance URL has an invalid port or address") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("instance URL must be http:// or https://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("instance URL must not carry user info")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("instance URL must be scheme://ip[:port] only (no path or query)")
    try:
        ip = ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        raise ValueError("instance URL host must be an IP address (like the axon on "
                         "chain), not a name") from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError("instance URL host must be a unicast address")
    if port == 0:
        raise ValueError("instance URL port must be in 1..65535")
    shown = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    return f"{scheme}://{shown}:{port or _DEFAULT_PORTS[scheme]}"


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
