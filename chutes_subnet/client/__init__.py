"""Client side of chutes-subnet: E2EE httpx transports and the local plaintext proxy.

``E2EETransport`` / ``AsyncE2EETransport`` plug into ``httpx.Client`` /
``httpx.AsyncClient`` (and so into the OpenAI SDK's ``http_client=``).
"""

from chutes_subnet.client.transport import AsyncE2EETransport, E2EETransport

__all__ = ["E2EETransport", "AsyncE2EETransport"]
