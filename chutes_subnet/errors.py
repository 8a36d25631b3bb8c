"""The one exception tree of chutes-subnet.

Every error a component raises on purpose derives from :class:`ChutesSubnetError`,
grouped by the boundary where it happens::

    ChutesSubnetError
    ├── E2EEError                     envelope / stream layer (chutes_subnet.e2ee)
    │   ├── EnvelopeFormatError       malformed bytes (length, framing, base64, JSON)
    │   ├── PayloadTooLargeError      compressed or decompressed size over the limit
    │   ├── DecryptionError           authentication failed; deliberately message-less
    │   │   └── StreamIntegrityError  reorder, drop, duplicate or truncation of a stream
    │   └── ReceiptError              answer receipt missing, malformed or not matching
    ├── WireError                     wire contract (chutes_subnet.wire); also a ValueError
    │   ├── HeaderError               invoke header missing/malformed (reason code)
    │   ├── UsageError                usage report not bounded non-negative integers
    │   └── FleetError                a miner's signed instance list refused (``code``)
    ├── NonceError                    single-use nonces (chutes_subnet.nonces); a
    │   │                             rejected nonce is a ``single_use.Use``, not an error
    │   └── NonceStoreUnavailable     backend down (maps to HTTP 503)
    ├── AuthError                     btauth/1 and API keys
    │   ├── AuthenticationError       bad/missing signature or key (HTTP 401)
    │   └── PermissionDenied          authenticated but not allowed (HTTP 403)
    ├── AttestationError              evidence parsing and verification
    │   ├── QuoteFormatError          TDX quote bytes malformed
    │   ├── GpuEvidenceFormatError    NVIDIA evidence malformed
    │   ├── CollateralError           collateral missing/unfetchable/expired
    │   ├── PolicyFileError           operator policy file invalid
    │   └── StatementError            validator statement malformed / bad signature
    ├── StoreError                    gateway state database (chutes_subnet.stores)
    │   ├── StoreUnavailable          engine down or too slow (maps to HTTP 503)
    │   └── SchemaVersionError        database schema newer than this code
    ├── ChainError                    subtensor / local chain
    ├── ConfigError                   operator input: flags, files, ports (one-line CLI error)
    ├── InferenceError                model backend failures
    └── ClientError                   client-side transport
        ├── NoInstancesError          discovery returned nothing usable
        │   └── NoVerifiedInstanceError   every instance offered failed verification
        ├── NoncesExhaustedError      every nonce offered was rejected
        ├── InstanceVerificationError one instance failed the client's own attestation check
        ├── AttestationRateLimited    the gateway refused to relay a challenge (HTTP 429)
        ├── DowngradeError            no instance offers an allowed E2EE version (v2 by default)
        └── PlaintextRefusedError     the request would leave the machine unencrypted

Subclasses that belong to one component live next to it and derive from the
bases above: ``attestation.verify.evidence.EvidenceFormatError``, ``attestation.verify.dcap.
DcapVerificationError``, ``attestation.verify.gpu.GpuVerificationError``,
``attestation.verify.simulated_tee.SimulatedVerificationError`` (AttestationError);
``inference.InvalidRequestError`` (InferenceError, ValueError),
``inference.UpstreamError`` and ``inference.upstream.SSEFormatError`` (InferenceError);
``gateway.miners.MinerConnectionError`` (the gateway's miner connection),
``validator.failures.EvaluationFailure`` and ``validator.state.ValidatorStateError``;
``registry.RegistryError`` (``InvalidInstanceRecord``, ``InstanceConflict``).
HTTP refusals are not errors of this tree: they are :class:`chutes_subnet.asgi.Refusal`.

Messages are safe to show a remote peer: they never contain plaintext, keys or
secrets. Foreign exceptions are translated where they enter (``raise ... from exc``).
"""

from __future__ import annotations

__all__ = [
    "ChutesSubnetError",
    "E2EEError",
    "EnvelopeFormatError",
    "PayloadTooLargeError",
    "DecryptionError",
    "StreamIntegrityError",
    "ReceiptError",
    "WireError",
    "HeaderError",
    "UsageError",
    "FleetError",
    "NonceError",
    "NonceStoreUnavailable",
    "AuthError",
    "AuthenticationError",
    "PermissionDenied",
    "AttestationError",
    "QuoteFormatError",
    "GpuEvidenceFormatError",
    "CollateralError",
    "PolicyFileError",
    "StatementError",
    "StoreError",
    "StoreUnavailable",
    "SchemaVersionError",
    "ChainError",
    "ConfigError",
    "InferenceError",
    "ClientError",
    "NoInstancesError",
    "NoncesExhaustedError",
    "NoVerifiedInstanceError",
    "InstanceVerificationError",
    "AttestationRateLimited",
    "DowngradeError",
    "PlaintextRefusedError",
]


class ChutesSubnetError(Exception):
    """Base of every deliberate chutes-subnet error."""


class E2EEError(ChutesSubnetError):
    """Failure in the end-to-end encryption layer."""


class EnvelopeFormatError(E2EEError):
    """Bytes do not have the shape of an envelope or stream frame."""


class PayloadTooLargeError(E2EEError):
    """A compressed or decompressed payload exceeds the configured limit."""


class DecryptionError(E2EEError):
    """Authenticated decryption failed. Carries no detail, so it is no oracle."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class StreamIntegrityError(DecryptionError):
    """A stream was reordered, truncated, duplicated or cut short."""

    def __init__(self, reason: str = "stream integrity check failed") -> None:
        Exception.__init__(self, reason)
        self.reason = reason


class ReceiptError(E2EEError):
    """An answer's signed receipt is missing, malformed, wrongly signed or for another answer.

    ``reason`` is one short code (``missing``, ``malformed``, ``bad_signature``,
    ``wrong_request``, ``wrong_answer``, ``wrong_instance``, ``stale``, ``no_key``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class WireError(ChutesSubnetError, ValueError):
    """A peer's message does not follow the wire contract."""


class HeaderError(WireError):
    """A routing header is missing or malformed; ``reason`` is the stable code
    (``bad_header``, ``bad_path``, ``bad_version``) an HTTP refusal carries."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UsageError(WireError):
    """A usage report is not a pair of bounded non-negative integer token counts."""


class FleetError(WireError):
    """A miner's signed instance list (``GET /fleet``) is malformed, unsigned, stale or
    signed by another hotkey; ``code`` is a stable reason (``bad_signature``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NonceError(ChutesSubnetError):
    """Single-use nonce handling failed."""


class NonceStoreUnavailable(NonceError):
    """The nonce backend cannot be reached; callers should answer 503."""


class AuthError(ChutesSubnetError):
    """Authentication or authorization failure."""


class AuthenticationError(AuthError):
    """The caller could not be authenticated (HTTP 401); ``reason`` is a stable code
    (btauth/1: ``malformed``, ``stale``, ``replayed``, ...)."""

    def __init__(self, message: str, *, reason: str = "unauthenticated") -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDenied(AuthError):
    """The caller is authenticated but not allowed (HTTP 403)."""


class AttestationError(ChutesSubnetError):
    """Evidence could not be parsed or verified."""


class QuoteFormatError(AttestationError):
    """A TDX quote is truncated or malformed."""


class GpuEvidenceFormatError(AttestationError):
    """NVIDIA GPU evidence is truncated or malformed."""


class CollateralError(AttestationError):
    """DCAP collateral is missing, unfetchable or outside its validity window."""


class PolicyFileError(AttestationError):
    """The operator's attestation policy file is invalid."""


class StatementError(AttestationError):
    """A validator attestation statement is malformed, oversized or badly signed."""


class StoreError(ChutesSubnetError):
    """Failure of the database holding gateway state (keys, usage, journal)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or did not answer in time."""


class SchemaVersionError(StoreError):
    """The database was migrated by newer code than this one."""


class ChainError(ChutesSubnetError):
    """A chain read or write failed."""


class ConfigError(ChutesSubnetError):
    """The operator's configuration or host cannot work (bad flag, file, port in use).

    The message names the problem and the fix; command-line entry points print it as
    one line and exit non-zero.
    """


class InferenceError(ChutesSubnetError):
    """The inference backend failed."""


class ClientError(ChutesSubnetError):
    """Client-side E2EE transport failure."""


class NoInstancesError(ClientError):
    """Discovery returned no usable instance for the model."""


class NoncesExhaustedError(ClientError):
    """Every nonce tried was rejected by the gateway."""


class InstanceVerificationError(ClientError):
    """An instance failed the client's attestation check; nothing was sent to it.

    ``instance_id`` names the instance, ``reason`` is a stable code (a verifier
    :class:`~chutes_subnet.attestation.verify.reasons.ReasonCode` value or a client code such as
    ``key_mismatch``, ``instance_id_mismatch``, ``relay_timeout``).
    """

    def __init__(self, instance_id: str, reason: str, message: str) -> None:
        super().__init__(f"instance {instance_id[:40]}: {reason}: {message}")
        self.instance_id = instance_id
        self.reason = reason
        self.detail = message


class NoVerifiedInstanceError(NoInstancesError):
    """Every instance offered for the model failed verification (``failures`` says why)."""

    def __init__(self, failures: tuple[InstanceVerificationError, ...]) -> None:
        first = f": {failures[0]}" if failures else ""
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(f"no instance passed attestation verification{first}{more}")
        self.failures = failures


class AttestationRateLimited(ClientError):
    """The gateway refused to relay an attestation challenge (HTTP 429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"attestation relay rate limited; retry after {retry_after:g} s")
        self.retry_after = retry_after


class DowngradeError(ClientError):
    """Discovery offers no E2EE version the client allows (v1 needs an explicit opt-in)."""


class PlaintextRefusedError(ClientError):
    """The request cannot be end-to-end encrypted, so it was not sent at all."""
