"""The gateway's HTTP client towards miners, and the one place where the HTTP client's
failures are translated into the gateway's.

Pooled keep-alive POSTs through :class:`chutes_subnet.httpclient.HttpClient` (no
``User-Agent``, no ``Accept-Encoding``: the bytes are ciphertext and are relayed
exactly as received).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from chutes_subnet.errors import ChutesSubnetError
from chutes_subnet.httpclient import HttpClient, HttpClientError, Response

__all__ = ["MinerClient", "MinerConnectionError", "MinerResponse"]


class MinerConnectionError(ChutesSubnetError):
    """A miner could not be reached or broke off; ``before_response`` tells whether any
    status line had been received (only then may a client retry elsewhere)."""

    def __init__(self, reason: str, *, before_response: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.before_response = before_response


class MinerResponse:
    """Status, headers and a body iterator of a miner response (not yet read)."""

    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self.status: int = resp.status
        #: case-insensitive lookups
        self.headers: Mapping[str, str] = resp.headers

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises :class:`MinerConnectionError` if cut off."""
        try:
            async for chunk in self._resp.iter_chunks():
                yield chunk
        except HttpClientError as exc:
            raise MinerConnectionError("miner stream interrupted", before_response=False) from exc

    async def read_bounded(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body (the rest is discarded)."""
        try:
            return await self._resp.read_bounded(limit)
        except HttpClientError as exc:
            raise MinerConnectionError("miner answer interrupted", before_response=False) from exc

    def release(self) -> None:
        """Return the connection to the pool (or close it if the body was not read)."""
        self._resp.release()


class MinerClient:
    """Pooled POSTs to miners with connect and read timeouts."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 max_connections: int = 512) -> None:
        self._http = HttpClient(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                max_connections=max_connections)

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> MinerResponse:
        """Send a POST and return once the status line and headers arrived."""
        try:
            resp = await self._http.post(url, headers, body)
        except HttpClientError as exc:
            raise MinerConnectionError("miner unreachable", before_response=True) from exc
        except ValueError as exc:  # a registry URL this client cannot call
            raise MinerConnectionError("miner URL unusable", before_response=True) from exc
        return MinerResponse(resp)

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()
