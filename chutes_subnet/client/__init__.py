"""Client side of chutes-subnet: E2EE httpx transports and the local plaintext proxy.

``E2EETransport`` / ``AsyncE2EETransport`` plug into ``httpx.Client`` /
``httpx.AsyncClient`` (and so into the OpenAI SDK's ``http_client=``). They verify
every instance themselves (:class:`ClientPolicy`) before encrypting to its key;
:func:`verify_model` shows the verdicts (``chutes-subnet verify``).
"""

from chutes_subnet.client.check import verify_model
from chutes_subnet.client.client_policy import ClientPolicy
from chutes_subnet.client.transport import AsyncE2EETransport, E2EETransport
from chutes_subnet.client.verify import ClientVerdict

__all__ = ["AsyncE2EETransport", "ClientPolicy", "ClientVerdict", "E2EETransport", "verify_model"]
