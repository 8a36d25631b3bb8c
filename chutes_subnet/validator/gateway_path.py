"""Benchmark requests on the organic path, so a miner's host cannot single them out.

Organic requests reach a miner as the gateway forwards them: the gateway's
:class:`~chutes_subnet.gateway.miners.MinerClient` (:mod:`chutes_subnet.httpclient`, no ``User-Agent``, its
own header order), the headers of :meth:`~chutes_subnet.wire.headers.InvokeHeaders.to_headers`
and the validator hotkey's btauth/1 signature. :class:`GatewayPath` sends benchmark
requests through the same client class (or the in-process gateway's own instance, so
they also share its connections), with the same header builder and signer: the bytes
of the request head are those of an organic request. Request sizes follow the
organic sample the gateway keeps (:mod:`chutes_subnet.gateway.shapes`; see
:func:`chutes_subnet.validator.benchmark.stream_prompt`'s ``size``).

It offers the small part of ``httpx.AsyncClient`` the benchmark uses
(``stream("POST", url, content=, headers=)`` -> ``status_code``, ``aiter_raw()``);
transport failures become :class:`~.failures.EvaluationFailure` here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from chutes_subnet.gateway.miners import MinerClient, MinerConnectionError, MinerResponse

from .failures import EvaluationFailure

__all__ = ["GatewayPath"]


class _Response:
    __slots__ = ("_resp",)

    def __init__(self, resp: MinerResponse) -> None:
        self._resp = resp

    @property
    def status_code(self) -> int:
        return self._resp.status

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.iter_chunks():
                yield chunk
        except MinerConnectionError as exc:
            raise EvaluationFailure("bad_response", "stream: miner broke off") from exc


class GatewayPath:
    """Benchmark HTTP through a gateway :class:`MinerClient` (see module doc)."""

    def __init__(self, miners: MinerClient | None = None, *, connect_timeout: float = 5.0,
                 read_timeout: float = 30.0) -> None:
        self._owned = miners is None
        self.miners = miners or MinerClient(connect_timeout=connect_timeout,
                                            read_timeout=read_timeout)

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, *, content: bytes,
                     headers: Mapping[str, str]) -> AsyncIterator[_Response]:
        if method != "POST":
            raise ValueError("the benchmark only POSTs")
        try:
            resp = await self.miners.post(url, headers, content)
        except MinerConnectionError as exc:
            raise EvaluationFailure("unreachable", "invoke: connection failed") from exc
        try:
            yield _Response(resp)
        finally:
            resp.release()

    async def aclose(self) -> None:
        """Close the client if this object created it."""
        if self._owned:
            await self.miners.aclose()
