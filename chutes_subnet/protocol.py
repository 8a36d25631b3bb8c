"""Former home of the wire contract, kept as a re-export for existing imports.

The contract lives in :mod:`chutes_subnet.wire` (constants in ``wire.protocol``,
schemas in ``wire.messages``, header names and parsers in ``wire.headers``); new
code imports from there.
"""

from __future__ import annotations

from chutes_subnet.wire.headers import (  # noqa: F401
    H_AUTHORIZATION,
    H_CHUTE_ID,
    H_INSTANCE_ID,
    H_NONCE,
    H_PATH,
    H_RETRY,
    H_STREAM,
    H_USAGE,
    H_VERSION,
)
from chutes_subnet.wire.messages import (  # noqa: F401
    AttestRequest,
    AttestResponse,
    DiscoveredInstance,
    ErrorBody,
    InstancesResponse,
    ModelCard,
    ModelsResponse,
)
from chutes_subnet.wire.protocol import (  # noqa: F401
    ATTEST_NONCE_BYTES,
    CHUTE_NAMESPACE,
    E2EE_VERSION_V1,
    E2EE_VERSION_V2,
    INVOKE_PATHS,
    MAX_ATTEST_BODY_BYTES,
    MAX_DECOMPRESSED_BYTES,
    MAX_ENVELOPE_BYTES,
    NONCE_TTL_CLIENT_SECONDS,
    NONCE_TTL_SERVER_SECONDS,
    SUPPORTED_E2EE_VERSIONS,
    chute_id_for_model,
    parse_json,
)

#: Former name of :class:`~chutes_subnet.wire.messages.DiscoveredInstance`.
InstanceInfo = DiscoveredInstance
