"""The validator-run gateway: discovery, nonce issuance, ciphertext routing, metering.

It holds no E2EE key material and never decrypts; see ``docs/gateway.md``.
The instance registry it reads lives in :mod:`chutes_subnet.registry` (the validator
writes it).
"""

from chutes_subnet.gateway.config import GatewayConfig

__all__ = ["GatewayConfig"]
