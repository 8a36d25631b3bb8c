"""OpenAI-compatible upstream backend: forwards decrypted requests to vLLM, SGLang or
any server speaking ``/v1/chat/completions`` and ``/v1/completions`` (and
``/v1/embeddings``, passed through non-stream, for engines serving an embedding model).

Trust boundary: the upstream receives the *plaintext* request and produces the
plaintext answer, so it MUST run inside the same TEE (the same TDX trust domain,
attested together with the miner) and SHOULD listen on loopback only
(``--host 127.0.0.1``). A URL whose host is not a loopback address is refused unless
the operator sets ``dangerous_allow_non_loopback=True`` (e.g. a container network that
is itself inside the TD). Proxy environment variables are never honoured.

Behaviour:

* the body is forwarded as JSON to ``{base_url}{path}`` (``base_url`` without
  ``/v1``, e.g. ``http://127.0.0.1:8000``), with ``model`` replaced by
  ``upstream_model`` and ``stream`` set by the call; streams ask for
  ``stream_options.include_usage``; responses report ``model_id`` as their model;
* timeouts: ``connect_timeout`` to connect, ``read_timeout`` between two reads (a
  stalled stream), ``timeout`` for the whole exchange;
* a response (or stream) larger than ``max_response_bytes`` is cut off with an error;
* every failure is an :class:`~chutes_subnet.inference.base.UpstreamError`: transport
  errors, timeouts, non-200 statuses (``status`` set), bodies that are not JSON
  objects, malformed SSE, an ``error`` object inside the stream, or a stream that
  ends before ``data: [DONE]`` without having finished (some engines, e.g.
  ``transformers serve``, close the stream after the chunk carrying
  ``finish_reason`` instead of sending ``[DONE]``: that is a complete answer).
  Messages never include upstream bodies.

Streams end with one ``choices=[]`` chunk carrying ``usage``; if the upstream sent
none, it is estimated (prompt_tokens 0, completion_tokens = content-bearing chunks).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.inference.base import DEFAULT_MODEL_ID, InvalidRequestError, UpstreamError
from chutes_subnet.inference.requests import check_path
from chutes_subnet.inference.responses import usage
from chutes_subnet.sse import SSEParser
from chutes_subnet.wire.protocol import EMBEDDINGS_PATH, MAX_DECOMPRESSED_BYTES, STREAM_PATHS

__all__ = ["OpenAIUpstreamBackend", "SSEDecoder", "SSEFormatError", "DEFAULT_MAX_LINE_BYTES"]

_DONE = "[DONE]"
_ERROR_BODY_PEEK = 64 * 1024
DEFAULT_MAX_LINE_BYTES = 1024 * 1024


class SSEFormatError(UpstreamError):
    """The upstream's event stream is not valid SSE (over-long line, undecodable bytes)."""


class SSEDecoder:
    """The project's one SSE parser (:class:`chutes_subnet.sse.SSEParser`) reading an
    upstream's ``text/event-stream``, its format errors reported as
    :class:`SSEFormatError` (an upstream failure here)."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._parser = SSEParser(max_line_bytes)

    def feed(self, chunk: bytes) -> list[str]:
        """Process ``chunk``; return the data of every event it completed, in order."""
        try:
            return self._parser.feed(chunk)
        except EnvelopeFormatError as exc:
            raise SSEFormatError(f"event-stream {exc}") from None

    @property
    def pending(self) -> bool:
        """True if bytes of an unfinished line or event are buffered."""
        return self._parser.pending


class OpenAIUpstreamBackend:
    """:class:`~chutes_subnet.inference.base.Backend` proxying to an OpenAI-compatible server."""

    def __init__(
        self,
        *,
        url: str,
        model_id: str = DEFAULT_MODEL_ID,
        upstream_model: str | None = None,
        api_key: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 120.0,
        max_response_bytes: int = MAX_DECOMPRESSED_BYTES,
        max_connections: int = 64,
        dangerous_allow_non_loopback: bool = False,
    ) -> None:
        self.base_url = _check_base_url(url, dangerous_allow_non_loopback)
        self.model_id = model_id
        self.upstream_model = upstream_model or model_id
        if min(timeout, connect_timeout, read_timeout) <= 0 or max_response_bytes <= 0:
            raise ValueError("timeouts and max_response_bytes must be positive")
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, connect=connect_timeout, sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._max_bytes = max_response_bytes
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:  # never shows the API key
        return f"OpenAIUpstreamBackend(url={self.base_url!r}, model_id={self.model_id!r})"

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Forward a non-stream request; return the upstream's response object."""
        payload = self._payload(path, body, stream=False)
        with _translate_errors():
            async with self._http().post(self.base_url + path, json=payload) as resp:
                await _raise_for_status(resp)
                raw = await _read_bounded(resp, self._max_bytes)
        result = _json_object(raw)
        listed = "data" if path == EMBEDDINGS_PATH else "choices"
        if not isinstance(result.get(listed), list):
            raise UpstreamError(f"upstream response has no {listed} list")
        result["model"] = self.model_id
        return result

    def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Forward a stream request; yield the upstream's chunks, then a usage chunk."""
        payload = self._payload(path, body, stream=True)
        return self._stream(path, payload)

    async def ready(self, timeout: float = 2.0) -> bool:
        """True when the upstream lists its models (``GET {url}/v1/models`` answers 200):
        vLLM and SGLang answer only once the weights are loaded. Never raises."""
        try:
            async with self._http().get(self.base_url + "/v1/models",
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def aclose(self) -> None:
        """Close the HTTP session and its pooled connections. Idempotent."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- internals -------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                trust_env=False,
            )
        return self._session

    def _payload(self, path: str, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        check_path(path)
        if stream and path not in STREAM_PATHS:
            raise InvalidRequestError(f"{path} cannot be streamed")
        if not isinstance(body, dict):
            raise InvalidRequestError("request body must be a JSON object")
        if path == EMBEDDINGS_PATH:  # passed through; the upstream validates the rest
            return {**body, "model": self.upstream_model}
        payload = {**body, "model": self.upstream_model, "stream": stream}
        if stream:
            options = payload.get("stream_options")
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                         "include_usage": True}
        else:
            payload.pop("stream_options", None)
        return payload

    async def _stream(self, path: str, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        decoder = SSEDecoder()
        received = 0
        final_usage: dict[str, Any] | None = None
        last: dict[str, Any] | None = None
        content_chunks = 0
        done = finished = False
        with _translate_errors():
            async with self._http().post(self.base_url + path, json=payload) as resp:
                await _raise_for_status(resp)
                try:
                    async for data in resp.content.iter_any():
                        received += len(data)
                        if received > self._max_bytes:
                            raise UpstreamError("upstream stream exceeds the size limit")
                        for event in decoder.feed(data):
                            if event.strip() == _DONE:
                                done = True
                                break
                            chunk = _json_object(event.encode("utf-8"))
                            if "error" in chunk:
                                raise UpstreamError("upstream reported an error in the stream")
                            chunk["model"] = self.model_id
                            chunk_usage = chunk.pop("usage", None)
                            if isinstance(chunk_usage, dict):
                                final_usage = chunk_usage
                            last = chunk
                            choices = chunk.get("choices")
                            if not isinstance(choices, list):
                                raise UpstreamError("upstream chunk has no choices list")
                            if not choices:
                                continue
                            if any(_has_content(choice) for choice in choices):
                                content_chunks += 1
                            finished = finished or any(_has_finished(c) for c in choices)
                            yield chunk
                        if done:
                            break
                    done = done or (finished and not decoder.pending)  # clean EOF
                finally:
                    if not done:
                        resp.close()  # abandoned or failed: do not reuse the connection
        if not done:
            raise UpstreamError("upstream stream ended before [DONE] or finish_reason")
        if final_usage is None:
            final_usage = usage(0, content_chunks)
        header: dict[str, Any] = {
            key: last[key] for key in ("id", "object", "created") if last and key in last
        }
        yield {**header, "model": self.model_id, "choices": [], "usage": final_usage}


def _check_base_url(url: str, allow_non_loopback: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstream url {url!r} must be http(s)://host[:port], e.g. "
                         "--backend.url http://127.0.0.1:8000")
    if parts.query or parts.fragment:
        raise ValueError("upstream url must not carry a query or fragment")
    if not allow_non_loopback and not _is_loopback(parts.hostname):
        raise ValueError(
            f"upstream {url} is not on loopback: it must listen on 127.0.0.1 inside the TEE "
            "(vllm serve ... --host 127.0.0.1); to override, pass "
            "--backend.dangerous_allow_non_loopback (dangerous_allow_non_loopback=True)"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _has_content(choice: Any) -> bool:
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content"))
    return bool(choice.get("text"))


def _has_finished(choice: Any) -> bool:
    return isinstance(choice, dict) and choice.get("finish_reason") is not None


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
    """The one place aiohttp/asyncio failures become UpstreamError."""
    try:
        yield
    except UpstreamError:
        raise
    except TimeoutError as exc:  # = asyncio.TimeoutError; includes ServerTimeoutError
        raise UpstreamError("upstream timed out") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"upstream request failed ({type(exc).__name__})") from exc


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status != 200:
        with contextlib.suppress(Exception):  # drain a little so the status is final
            await resp.content.read(_ERROR_BODY_PEEK)
        raise UpstreamError(f"upstream answered HTTP {resp.status}", status=resp.status)


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise UpstreamError("upstream response exceeds the size limit")
    body = bytearray()
    async for data in resp.content.iter_any():
        body += data
        if len(body) > limit:
            raise UpstreamError("upstream response exceeds the size limit")
    return bytes(body)


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise UpstreamError("upstream sent malformed JSON") from None
    if not isinstance(value, dict):
        raise UpstreamError("upstream sent JSON that is not an object")
    return value
