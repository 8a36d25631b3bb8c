"""httpx transports that end-to-end encrypt OpenAI model calls through a gateway.

Usage with the OpenAI SDK (sync; :class:`AsyncE2EETransport` for ``AsyncOpenAI``)::

    http = httpx.Client(transport=E2EETransport(api_key="csk_..."))
    client = OpenAI(base_url="https://gateway.example/v1", api_key="csk_...", http_client=http)
    client.chat.completions.create(model="...", messages=[...], stream=True)

A ``POST`` to ``.../v1/chat/completions`` or ``.../v1/completions`` with a JSON body
naming a ``model`` is resolved to a chute (``/v1/models``, cached), given an instance
and a nonce (``/e2e/instances/{chute_id}``, pooled until expiry or exhaustion), sealed
(v2 by default, v1 when the instance only speaks v1), sent to ``/e2e/invoke``, and the
answer is decrypted — JSON as JSON, SSE as SSE — so the SDK sees an ordinary response.
Everything else passes through to the inner transport unchanged.

Retries (each with a fresh nonce and a freshly sealed envelope): a refused nonce
(403/409/410) drops the pool and rediscovers; a gateway answer carrying
``X-E2E-Retry: instance`` (miner failed before any byte, or instance gone) moves to
another instance. Errors: :class:`~chutes_subnet.errors.NoInstancesError`,
:class:`~chutes_subnet.errors.NoncesExhaustedError`, and while iterating a stream
:class:`~chutes_subnet.errors.StreamIntegrityError` /
:class:`~chutes_subnet.errors.DecryptionError`. Other gateway answers (401, 429, ...)
are returned as they are, so the SDK raises its usual typed errors.

The two transports share one sans-I/O flow (a generator that yields the HTTP requests
it needs); only the driving loop differs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from chutes_subnet.client.discovery import DiscoveryCache, parse_instances, parse_models
from chutes_subnet.errors import NoInstancesError, NoncesExhaustedError, PayloadTooLargeError
from chutes_subnet.wire.call import SealedCall, StreamDecoder, choose_version, seal_call
from chutes_subnet.wire.headers import H_AUTHORIZATION, H_RETRY, RETRY_INSTANCE
from chutes_subnet.wire.protocol import INVOKE_PATH, INVOKE_PATHS, MAX_ENVELOPE_BYTES

__all__ = ["E2EETransport", "AsyncE2EETransport"]

_DISCOVERY_TIMEOUT = {"connect": 10.0, "read": 30.0, "write": 30.0, "pool": 10.0}
_NONCE_STATUSES = (403, 409, 410)


@dataclass
class _Step:
    request: httpx.Request
    read_body: bool


@dataclass
class _StreamResult:
    upstream: httpx.Response
    decoder: StreamDecoder


_Flow = Generator[_Step, httpx.Response, "httpx.Response | _StreamResult"]


def _model_call(request: httpx.Request) -> tuple[dict[str, Any], str] | None:
    """``(payload, invoke path)`` when the request is an encryptable model call."""
    if request.method != "POST":
        return None
    path = request.url.path
    invoke_path = next((p for p in INVOKE_PATHS if path.endswith(p)), None)
    if invoke_path is None:
        return None
    try:
        payload = json.loads(request.content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
        return None
    return payload, invoke_path


def _reason(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


class _Core:
    """Configuration, caches and the shared request flow."""

    def __init__(self, api_key: str | None, api_base: str | None,
                 versions: tuple[int, ...], max_attempts: int) -> None:
        if not versions or any(v not in (1, 2) for v in versions):
            raise ValueError("versions must be a non-empty subset of (1, 2), in preference order")
        self.api_key = api_key
        self.api_base = api_base.rstrip("/") if api_base else None
        self.versions = versions
        self.max_attempts = max(1, max_attempts)
        self.cache = DiscoveryCache()

    def _base(self, request: httpx.Request, invoke_path: str) -> str:
        if self.api_base:
            return self.api_base
        url = request.url
        prefix = url.path[: len(url.path) - len(invoke_path)]
        return f"{url.scheme}://{url.netloc.decode('ascii')}{prefix}"

    def _key(self, request: httpx.Request) -> str:
        if self.api_key:
            return self.api_key
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NoInstancesError("no api key: pass api_key= or send Authorization: Bearer")
        return token.strip()

    def flow(self, request: httpx.Request, payload: dict[str, Any],
             invoke_path: str) -> _Flow:
        """The whole model call; yields requests, receives responses."""
        base, key = self._base(request, invoke_path), self._key(request)
        auth = {H_AUTHORIZATION: f"Bearer {key}"}
        model, stream = payload["model"], bool(payload.get("stream", False))
        chute = self.cache.chute_for(model)
        if chute is None:
            resp = yield _Step(httpx.Request("GET", f"{base}/v1/models", headers=auth,
                                             extensions={"timeout": _DISCOVERY_TIMEOUT}), True)
            if resp.status_code != 200:
                return resp
            self.cache.set_models(parse_models(resp.json()))
            chute = self.cache.lookup_after_refresh(model)
            if chute is None:
                raise NoInstancesError("the gateway serves no model of that name")
        avoid: set[str] = set()
        last: httpx.Response | None = None
        nonce_refusals = 0
        for _ in range(self.max_attempts):
            got = self.cache.take(chute, avoid)
            if got is None:
                resp = yield _Step(httpx.Request(
                    "GET", f"{base}/e2e/instances/{chute}", headers=auth,
                    extensions={"timeout": _DISCOVERY_TIMEOUT}), True)
                if resp.status_code == 503 and _reason(resp) == "no_instances":
                    raise NoInstancesError("no attested instance serves this model now")
                if resp.status_code == 404 and _reason(resp) == "unknown_chute":
                    raise NoInstancesError("the gateway knows no instance of this model")
                if resp.status_code != 200:
                    return resp
                offers, ttl = parse_instances(resp.json())
                self.cache.refill(chute, offers, ttl)
                got = self.cache.take(chute, avoid)
                if got is None:
                    if last is not None:
                        return last  # every instance offered failed: report the last failure
                    raise NoInstancesError("no usable instance for this model")
            offer, nonce = got
            version = choose_version(offer, self.versions)
            if version is None:
                avoid.add(offer.instance_id)
                continue
            call = seal_call(offer, chute_id=chute, nonce=nonce, path=invoke_path,
                             stream=stream, payload=payload, api_key=key, version=version)
            invoke = httpx.Request("POST", base + INVOKE_PATH, headers=call.headers,
                                   content=call.body,
                                   extensions={"timeout": request.extensions.get("timeout")}
                                   if "timeout" in request.extensions else {})
            resp = yield _Step(invoke, not stream)
            if resp.status_code == 200:
                return self._success(call, resp, stream)
            last = resp
            if resp.status_code in _NONCE_STATUSES and _reason(resp).startswith("nonce_"):
                nonce_refusals += 1
                self.cache.invalidate(chute)
                continue
            if resp.headers.get(H_RETRY) == RETRY_INSTANCE:
                avoid.add(offer.instance_id)
                self.cache.drop_instance(chute, offer.instance_id)
                continue
            return resp
        if nonce_refusals and last is not None and last.status_code in _NONCE_STATUSES:
            raise NoncesExhaustedError("the gateway rejected every nonce it offered")
        if last is None:
            raise NoInstancesError("no instance speaks an allowed E2EE version")
        return last

    @staticmethod
    def _success(call: SealedCall, resp: httpx.Response,
                 stream: bool) -> httpx.Response | _StreamResult:
        if stream:
            return _StreamResult(resp, call.stream_decoder())
        data = call.open_json(resp.content)
        return httpx.Response(200, headers={"content-type": "application/json"},
                              content=json.dumps(data).encode())


def _finish(result: httpx.Response | _StreamResult, stream_cls: Any,
            original: httpx.Request) -> httpx.Response:
    if isinstance(result, _StreamResult):
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=stream_cls(result.upstream, result.decoder),
                              request=original)
    # A ByteStream (not content=) keeps the response streamable for callers that use
    # stream=True / aiter_raw() on non-stream answers too.
    return httpx.Response(result.status_code, headers=result.headers,
                          stream=httpx.ByteStream(result.content), request=original)


class _SyncDecrypted(httpx.SyncByteStream):
    def __init__(self, upstream: httpx.Response, decoder: StreamDecoder) -> None:
        self._up, self._dec = upstream, decoder

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._up.stream:  # type: ignore[union-attr]
            out = self._dec.feed(chunk)
            if out:
                yield out
        tail = self._dec.finish()
        if tail:
            yield tail

    def close(self) -> None:
        self._up.close()


class _AsyncDecrypted(httpx.AsyncByteStream):
    def __init__(self, upstream: httpx.Response, decoder: StreamDecoder) -> None:
        self._up, self._dec = upstream, decoder

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._up.stream:  # type: ignore[union-attr]
            out = self._dec.feed(chunk)
            if out:
                yield out
        tail = self._dec.finish()
        if tail:
            yield tail

    async def aclose(self) -> None:
        await self._up.aclose()


def _read_bounded_sync(resp: httpx.Response) -> None:
    body = bytearray()
    for chunk in resp.stream:  # type: ignore[union-attr]
        body += chunk
        if len(body) > MAX_ENVELOPE_BYTES:
            resp.close()
            raise PayloadTooLargeError("gateway answer exceeds the size limit")
    resp.close()
    resp._content = bytes(body)  # noqa: SLF001 - httpx's own read() does the same


async def _read_bounded_async(resp: httpx.Response) -> None:
    body = bytearray()
    async for chunk in resp.stream:  # type: ignore[union-attr]
        body += chunk
        if len(body) > MAX_ENVELOPE_BYTES:
            await resp.aclose()
            raise PayloadTooLargeError("gateway answer exceeds the size limit")
    await resp.aclose()
    resp._content = bytes(body)  # noqa: SLF001


class E2EETransport(httpx.BaseTransport):
    """Sync transport: encrypts model calls end to end, passes everything else through.

    ``api_key`` defaults to the request's own ``Authorization: Bearer`` value;
    ``api_base`` (the gateway URL) defaults to the request URL minus the model path.
    ``versions`` lists allowed E2EE versions in preference order.
    """

    def __init__(self, api_key: str | None = None, api_base: str | None = None, *,
                 inner: httpx.BaseTransport | None = None, versions: tuple[int, ...] = (2, 1),
                 max_attempts: int = 4) -> None:
        self._core = _Core(api_key, api_base, versions, max_attempts)
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        call = _model_call(request)
        if call is None:
            return self._inner.handle_request(request)
        flow = self._core.flow(request, *call)
        try:
            step = next(flow)
            while True:
                resp = self._inner.handle_request(step.request)
                if step.read_body or resp.status_code != 200:
                    _read_bounded_sync(resp)
                step = flow.send(resp)
        except StopIteration as done:
            return _finish(done.value, _SyncDecrypted, request)

    def close(self) -> None:
        self._inner.close()


class AsyncE2EETransport(httpx.AsyncBaseTransport):
    """Async twin of :class:`E2EETransport` (for ``httpx.AsyncClient`` / ``AsyncOpenAI``)."""

    def __init__(self, api_key: str | None = None, api_base: str | None = None, *,
                 inner: httpx.AsyncBaseTransport | None = None,
                 versions: tuple[int, ...] = (2, 1), max_attempts: int = 4) -> None:
        self._core = _Core(api_key, api_base, versions, max_attempts)
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        call = _model_call(request)
        if call is None:
            return await self._inner.handle_async_request(request)
        flow = self._core.flow(request, *call)
        try:
            step = next(flow)
            while True:
                resp = await self._inner.handle_async_request(step.request)
                if step.read_body or resp.status_code != 200:
                    await _read_bounded_async(resp)
                step = flow.send(resp)
        except StopIteration as done:
            return _finish(done.value, _AsyncDecrypted, request)

    async def aclose(self) -> None:
        await self._inner.aclose()
