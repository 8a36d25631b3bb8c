"""Local E2EE proxy: a plaintext OpenAI-compatible API on localhost, encrypted upstream.

``chutes-subnet proxy --listen 127.0.0.1:8787 --upstream https://gateway.example``
lets any language or SDK use the subnet: point its base URL at
``http://127.0.0.1:8787/v1``. Model calls (:data:`~chutes_subnet.wire.protocol.INVOKE_PATHS`)
are verified and sealed by :class:`AsyncE2EETransport` before they leave the machine
(same ``verify``/``policy``/``versions`` semantics: full verification and v2 only by
default). ``GET /v1/models`` is cached for ``models_ttl`` seconds; ``GET /health``
reports liveness, ``GET /ready`` readiness (the gateway answers) and ``GET /metrics``
Prometheus counts of model calls by status; ``GET /v1/usage`` and the gateway's request journal
``GET /v1/requests`` are relayed only to a caller presenting the proxy's own key
(when one is configured). Every other path is refused: nothing is forwarded in
plaintext.

Plaintext exists only on the loopback hop, so the proxy guards it against browsers
(checks in order, before any route):

1. ``Host`` must name the proxy itself (a loopback name, or ``allowed_hosts``, with
   the listening port when known) -> 403 ``host_not_allowed`` (DNS rebinding);
2. an ``Origin`` header must be the proxy's own origin, ``Sec-Fetch-Site`` must not be
   ``cross-site``/``same-site``, and CORS preflights are never answered -> 403
   ``origin_not_allowed`` (a page on another origin cannot spend the key or read
   answers);
3. bodies must be ``application/json`` -> 415 ``json_required`` (a ``text/plain``
   "simple" request from a page is refused even without an Origin).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chutes_subnet.attestation.verify.binding import constant_time_equal
from chutes_subnet.client.client_policy import ClientPolicy
from chutes_subnet.client.transport import AsyncE2EETransport, plaintext_refusal
from chutes_subnet.errors import (
    AttestationRateLimited,
    ClientError,
    DecryptionError,
    DowngradeError,
    E2EEError,
    NoInstancesError,
    NoncesExhaustedError,
    NoVerifiedInstanceError,
    PlaintextRefusedError,
)
from chutes_subnet.wire.headers import H_AUTHORIZATION, H_CONTENT_TYPE, H_RETRY, H_RETRY_AFTER
from chutes_subnet.wire.protocol import INVOKE_PATHS, MAX_ENVELOPE_BYTES

__all__ = ["LOOPBACK_HOSTS", "create_proxy_app"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_PASSED_REQUEST_HEADERS = (H_CONTENT_TYPE.lower(), "accept", H_AUTHORIZATION.lower())
_PASSED_RESPONSE_HEADERS = (H_CONTENT_TYPE.lower(), H_RETRY_AFTER.lower(), H_RETRY.lower())
_ACCOUNT_PATHS = ("/v1/usage", "/v1/requests")
_BODY_METHODS = (b"POST", b"PUT", b"PATCH")


def _openai_error(status: int, message: str, kind: str,
                  headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}},
                        status_code=status, headers=headers)


def _split_host(value: str) -> tuple[str, int | None]:
    """``(host, port)`` of a Host header value (IPv6 in brackets); port None if absent."""
    host, port = value.strip().lower(), None
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1:] if end > 0 else ""
        host = host[1:end] if end > 0 else host
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, _, p = host.partition(":")
        port = int(p) if p.isdigit() else -1
    return host, port


class _LoopbackGuard:
    """ASGI middleware: the three browser guards of the module doc."""

    def __init__(self, app: ASGIApp, *, hosts: Iterable[str], port: int | None) -> None:
        self.app = app
        self.hosts = frozenset(h.lower().strip("[]") for h in hosts)
        self.port = port

    def _host_ok(self, value: str) -> bool:
        host, port = _split_host(value)
        if host not in self.hosts:
            return False
        return self.port is None or port in (None, self.port)

    def _refusal(self, scope: Scope) -> Response | None:
        h = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self._host_ok(h.get("host", "")):
            return _openai_error(403, "Host is not this proxy's loopback address",
                                 "host_not_allowed")
        origin = h.get("origin")
        if origin is not None:
            scheme, _, rest = origin.partition("://")
            if scheme != "http" or not self._host_ok(rest) or "/" in rest:
                return _openai_error(403, "cross-origin requests are refused",
                                     "origin_not_allowed")
        if h.get("sec-fetch-site", "").lower() in ("cross-site", "same-site") \
                or scope["method"] == "OPTIONS":
            return _openai_error(403, "cross-origin requests are refused", "origin_not_allowed")
        if scope["method"].encode() in _BODY_METHODS:
            ctype = h.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return _openai_error(415, "request body must be application/json",
                                     "json_required")
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = self._refusal(scope)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _client_error(exc: ClientError | E2EEError) -> Response:
    """The OpenAI-style answer for a typed client failure (nothing was sent)."""
    if isinstance(exc, AttestationRateLimited):
        return _openai_error(429, str(exc), "rate_limited",
                             {"Retry-After": str(max(1, round(exc.retry_after)))})
    if isinstance(exc, NoVerifiedInstanceError):
        return _openai_error(503, str(exc), "attestation_failed")
    if isinstance(exc, NoInstancesError):
        return _openai_error(503, "no attested instance serves this model", "unavailable")
    if isinstance(exc, NoncesExhaustedError):
        return _openai_error(503, "the gateway rejected every nonce", "unavailable")
    if isinstance(exc, DowngradeError):
        return _openai_error(502, str(exc), "downgrade_refused")
    if isinstance(exc, PlaintextRefusedError):
        return _openai_error(400, str(exc), "plaintext_refused")
    if isinstance(exc, DecryptionError):
        return _openai_error(502, "response failed decryption", "integrity_error")
    return _openai_error(502, "end-to-end encryption failed", "upstream_error")


class ProxyMetrics:
    """Prometheus series of the proxy: model calls by answered HTTP status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("chutes_proxy_requests", "Model calls by answered HTTP status",
                                ["status"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def create_proxy_app(upstream: str, *, api_key: str | None = None, models_ttl: float = 60.0,
                     versions: tuple[int, ...] = (2,), timeout: float = 600.0,
                     transport: httpx.AsyncBaseTransport | None = None,
                     verify: str = "full", policy: ClientPolicy | None = None,
                     port: int | None = None, allowed_hosts: Iterable[str] = ()) -> ASGIApp:
    """Build the proxy app forwarding to the gateway at ``upstream``.

    ``port`` is the port the proxy listens on (Host/Origin must carry it when given);
    ``allowed_hosts`` adds host names besides the loopback ones (e.g. a container name).
    """
    base = upstream.rstrip("/")
    e2ee = AsyncE2EETransport(api_key, base, inner=transport, versions=versions,
                              verify=verify, policy=policy)
    client = httpx.AsyncClient(transport=e2ee, timeout=httpx.Timeout(timeout, connect=10.0))
    models_cache: dict[str, Any] = {"at": float("-inf"), "body": None}

    def _headers(request: Request) -> dict[str, str]:
        out = {k: v for k, v in request.headers.items() if k in _PASSED_REQUEST_HEADERS}
        if api_key:
            out["authorization"] = f"Bearer {api_key}"
        return out

    metrics = ProxyMetrics()

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "upstream": base})

    async def ready(_request: Request) -> Response:
        """200 when the gateway answers (any status below 500) within 2 s."""
        try:
            resp = await client.get(f"{base}/v1/models", timeout=2.0)
        except httpx.TransportError as exc:
            return JSONResponse({"ready": False, "reason": "gateway_unreachable",
                                 "error": type(exc).__name__}, status_code=503)
        if resp.status_code >= 500:
            return JSONResponse({"ready": False, "reason": "gateway_error",
                                 "status": resp.status_code}, status_code=503)
        return JSONResponse({"ready": True, "upstream": base})

    async def metrics_text(_request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

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

    async def account(request: Request) -> Response:
        """Usage and the gateway's journal: only for a caller holding the proxy's key."""
        if api_key:
            given = request.headers.get("authorization", "").encode()
            if not constant_time_equal(given, f"Bearer {api_key}".encode()):
                return _openai_error(401, "present the proxy's API key to read usage or the "
                                     "request journal", "unauthorized")
        return await forward(request)

    async def invoke(request: Request) -> Response:
        resp = await forward(request)
        metrics.requests.labels(str(resp.status_code)).inc()
        return resp

    async def refuse(request: Request) -> Response:
        why = plaintext_refusal(request.method, request.url.path, b"x") or "not served"
        return _openai_error(404, f"not served by the E2EE proxy (never forwarded in "
                             f"plaintext): {why}", "not_found")

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
        except (ClientError, E2EEError) as exc:
            return _client_error(exc)
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

    app = Starlette(lifespan=lifespan, routes=[
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        *(Route(p, account, methods=["GET"]) for p in _ACCOUNT_PATHS),
        *(Route(p, invoke, methods=["POST"]) for p in INVOKE_PATHS),
        Route("/{path:path}", refuse, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
    ])
    return _LoopbackGuard(app, hosts=(*LOOPBACK_HOSTS, *allowed_hosts), port=port)
