"""Local E2EE proxy: a plaintext OpenAI-compatible API on localhost, encrypted upstream.

``chutes-subnet proxy --listen 127.0.0.1:8787 --upstream https://gateway.example``
lets any language or SDK use the subnet: point its base URL at
``http://127.0.0.1:8787/v1``. Model calls are sealed by :class:`AsyncE2EETransport`
before they leave the machine; other calls are forwarded as they are. ``GET /v1/models``
is cached for ``models_ttl`` seconds; ``GET /health`` reports liveness.

Plaintext exists only on the loopback hop, so the proxy should listen on 127.0.0.1
(or a Unix socket / private container network). The API key is the one given with
``--api-key`` / ``CHUTES_API_KEY``; without one, each caller's own
``Authorization: Bearer`` is passed on.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from chutes_subnet.client.transport import AsyncE2EETransport
from chutes_subnet.errors import (
    ClientError,
    DecryptionError,
    E2EEError,
    NoInstancesError,
    NoncesExhaustedError,
)
from chutes_subnet.wire.headers import H_AUTHORIZATION, H_CONTENT_TYPE, H_RETRY, H_RETRY_AFTER
from chutes_subnet.wire.protocol import MAX_ENVELOPE_BYTES

__all__ = ["create_proxy_app"]

_PASSED_REQUEST_HEADERS = (H_CONTENT_TYPE.lower(), "accept", H_AUTHORIZATION.lower())
_PASSED_RESPONSE_HEADERS = (H_CONTENT_TYPE.lower(), H_RETRY_AFTER.lower(), H_RETRY.lower())


def _openai_error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                        status_code=status)


def create_proxy_app(upstream: str, *, api_key: str | None = None, models_ttl: float = 60.0,
                     versions: tuple[int, ...] = (2, 1), timeout: float = 600.0,
                     transport: httpx.AsyncBaseTransport | None = None) -> Starlette:
    """Build the proxy app forwarding to the gateway at ``upstream``."""
    base = upstream.rstrip("/")
    e2ee = AsyncE2EETransport(api_key, base, inner=transport, versions=versions)
    client = httpx.AsyncClient(transport=e2ee, timeout=httpx.Timeout(timeout, connect=10.0))
    models_cache: dict[str, Any] = {"at": float("-inf"), "body": None}

    def _headers(request: Request) -> dict[str, str]:
        out = {k: v for k, v in request.headers.items() if k in _PASSED_REQUEST_HEADERS}
        if api_key:
            out["authorization"] = f"Bearer {api_key}"
        return out

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "upstream": base})

    async def models(request: Request) -> Response:
        now = time.monotonic()
        if models_cache["body"] is not None and now - models_cache["at"] < models_ttl:
            return Response(models_cache["body"], media_type="application/json")
        try:
            resp = await client.get(f"{base}/v1/models", headers=_headers(request))
        except httpx.TransportError:
            return _openai_error(502, "gateway unreachable", "upstream_error")
        if resp.status_code == 200:
            models_cache.update(at=now, body=resp.content)
        return Response(resp.content, status_code=resp.status_code,
                        media_type=resp.headers.get("content-type"))

    async def forward(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_ENVELOPE_BYTES:
            return _openai_error(413, "request too large", "invalid_request_error")
        url = f"{base}{request.url.path}"
        if request.url.query:
            url += "?" + request.url.query
        req = client.build_request(request.method, url, headers=_headers(request), content=body)
        try:
            resp = await client.send(req, stream=True)
        except NoInstancesError:
            return _openai_error(503, "no attested instance serves this model", "unavailable")
        except NoncesExhaustedError:
            return _openai_error(503, "the gateway rejected every nonce", "unavailable")
        except DecryptionError:
            return _openai_error(502, "response failed decryption", "integrity_error")
        except (ClientError, E2EEError):
            return _openai_error(502, "end-to-end encryption failed", "upstream_error")
        except httpx.TransportError:
            return _openai_error(502, "gateway unreachable", "upstream_error")
        headers = {k: v for k, v in resp.headers.items() if k in _PASSED_RESPONSE_HEADERS}
        return StreamingResponse(_relay(resp), status_code=resp.status_code, headers=headers)

    async def _relay(resp: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.aiter_raw():
                yield chunk
        except (DecryptionError, E2EEError) as exc:
            # Status is already sent: end the stream with an error event the SDKs raise.
            msg = "stream integrity check failed" if isinstance(exc, DecryptionError) \
                else "stream decoding failed"
            yield b"data: " + json.dumps({"error": {"message": msg}}).encode() + b"\n\n"
        finally:
            await resp.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(lifespan=lifespan, routes=[
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ])
