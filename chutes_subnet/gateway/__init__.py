"""The validator-run gateway: discovery, nonce issuance, ciphertext routing, metering.

It holds no E2EE key material and never decrypts; see ``docs/gateway.md``.
"""

from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.registry import (
    InstanceRecord,
    InstanceRegistry,
    MemoryInstanceRegistry,
    SQLiteInstanceRegistry,
)

__all__ = [
    "GatewayConfig",
    "InstanceRecord",
    "InstanceRegistry",
    "MemoryInstanceRegistry",
    "SQLiteInstanceRegistry",
]
