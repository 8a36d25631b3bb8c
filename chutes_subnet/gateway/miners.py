"""The gateway's HTTP client towards miners (aiohttp), and the one place where aiohttp's
exceptions are translated into ours.

A pooled ``aiohttp.ClientSession`` (keep-alive, no cookie jar, no automatic
decompression: the bytes are ciphertext and are relayed exactly as received).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp

from chutes_subnet.errors import ChutesSubnetError

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

    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive; raises :class:`MinerConnectionError` if cut off."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise MinerConnectionError("miner stream interrupted", before_response=False) from exc

    async def read_bounded(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body (the rest is discarded)."""
        out = bytearray()
        async for chunk in self.iter_chunks():
            out += chunk[: max(0, limit - len(out))]
            if len(out) >= limit:
                break
        return bytes(out)

    def release(self) -> None:
        """Return the connection to the pool (or close it if the body was not read)."""
        self._resp.release()


class MinerClient:
    """Pooled POSTs to miners with connect and read timeouts."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 max_connections: int = 512) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout,
                                              sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections,
                                             limit_per_host=0, keepalive_timeout=30.0,
                                             enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> MinerResponse:
        """Send a POST and return once the status line and headers arrived."""
        try:
            resp = await self._get_session().post(url, data=body, headers=dict(headers),
                                                  allow_redirects=False)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise MinerConnectionError("miner unreachable", before_response=True) from exc
        return MinerResponse(resp)

    async def aclose(self) -> None:
        """Close pooled connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
