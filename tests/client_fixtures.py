"""Test support for client-verification tests: request recorders, a tampering router,
gateways over a fresh registry, and a miner double that answers challenges with the
real public TDX quote + 8 H100 evidence (TDX/GPU hardware is the one thing faked)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chutes_subnet.e2ee import KeyPair
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import InstanceRecord, MemoryInstanceRegistry
from chutes_subnet.wire.protocol import chute_id_for_model
from tests.servers import UvicornThread
from tests.vector_files import VECTORS_DIR

__all__ = [
    "VECTOR_REASONS",
    "VECTOR_NOW",
    "AsyncRecorder",
    "Gateway",
    "PathLog",
    "Recorder",
    "Rewriter",
    "gateway",
    "vector_collateral_text",
    "vector_gpu_nonce",
    "vector_gpus",
    "vector_miner_app",
    "vector_quote",
    "vector_record",
]

VECTOR_NOW = 1751624191  # inside the stored v4 collateral's validity window
#: what the public v4 vector fails when everything else is allowlisted: it measures no
#: workload manifest into RTMR3 and its report_data binds its author's nonce and key
VECTOR_REASONS = ["workload_event_missing", "binding_mismatch"]


def vector_quote() -> bytes:
    return (VECTORS_DIR / "tdx" / "tdx_v4_quote.bin").read_bytes()


def vector_gpus() -> list[dict[str, Any]]:
    return json.loads((VECTORS_DIR / "gpu" / "h100x8_evidence.json").read_text())


def vector_gpu_nonce() -> bytes:
    return bytes.fromhex(vector_gpus()[0]["nonce"])


def vector_collateral_text() -> str:
    return (VECTORS_DIR / "tdx" / "tdx_v4_quote.collateral.json").read_text()


@dataclass
class PathLog:
    """(method, path) of every request an app received."""

    entries: list[tuple[str, str]] = field(default_factory=list)

    def count(self, path_prefix: str) -> int:
        return sum(1 for _m, p in self.entries if p.startswith(path_prefix))

    def wrap(self, app: Any) -> Any:
        async def logged(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.entries.append((scope["method"], scope["path"]))
            await app(scope, receive, send)
        return logged


class Recorder(httpx.BaseTransport):
    """Keeps (method, path, body) of every request the client sends."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self.inner = inner or httpx.HTTPTransport()
        self.sent: list[tuple[str, str, bytes]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path, request.read()))
        return self.inner.handle_request(request)

    def paths(self) -> list[str]:
        return [p for _m, p, _b in self.sent]


class AsyncRecorder(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[str, str, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path, await request.aread()))
        return await self.inner.handle_async_request(request)


class Rewriter(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A router between client and gateway that rewrites JSON answers of one path."""

    def __init__(self, path_prefix: str, edit: Callable[[Any], Any]) -> None:
        self.prefix, self.edit = path_prefix, edit
        self.sync, self.async_ = httpx.HTTPTransport(), httpx.AsyncHTTPTransport()
        self.paths: list[str] = []

    def _rewrite(self, request: httpx.Request, resp: httpx.Response, body: bytes) -> httpx.Response:
        if request.url.path.startswith(self.prefix) and resp.status_code == 200:
            body = json.dumps(self.edit(json.loads(body))).encode()
        return httpx.Response(resp.status_code, headers={"content-type": "application/json"},
                              content=body)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        resp = self.sync.handle_request(request)
        if not request.url.path.startswith(self.prefix):
            return resp
        return self._rewrite(request, resp, resp.read())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        resp = await self.async_.handle_async_request(request)
        if not request.url.path.startswith(self.prefix):
            return resp
        return self._rewrite(request, resp, await resp.aread())


@dataclass
class Gateway:
    url: str
    key: str
    registry: MemoryInstanceRegistry
    log: PathLog


@contextmanager
def gateway(records: list[InstanceRecord], *, collateral: Any = None, signer: Any = None,
            compromised: bool = False, **config: Any) -> Iterator[Gateway]:
    """A real gateway on loopback over ``records``, logging every path it serves.

    ``compromised``: the records are written straight into the gateway's store,
    skipping the registry's checks — a gateway whose operator lies about keys.
    """
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    secret, _ = keys.create("client")
    for rec in records:
        if compromised:
            registry._records[rec.instance_id] = rec
        else:
            registry.upsert(rec)
    log = PathLog()
    app = create_app(GatewayConfig(**config), registry=registry, nonce_store=MemoryNonceStore(),
                     keys=keys, usage=MemoryUsageMeter(), forward_signer=signer,
                     collateral=collateral)
    with UvicornThread(log.wrap(app)) as gw:
        yield Gateway(gw.url, secret, registry, log)


def vector_record(kp: KeyPair, url: str, model: str) -> InstanceRecord:
    now = time.time()
    return InstanceRecord(instance_id=instance_id_for_key(kp.public_bytes),
                          chute_id=chute_id_for_model(model), model=model, url=url,
                          hotkey="5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty", uid=3,
                          e2e_pubkey=kp.public_b64, verified_at=now, expires_at=now + 600)


def vector_miner_app(kp: KeyPair, model: str, *, attest_delay: float = 0.0) -> Starlette:
    """Answers ``POST /attest`` with the real v4 quote + 8 real H100 entries (whatever
    the nonce): real DCAP and GPU crypto, but report_data binds someone else's nonce."""
    import asyncio

    answer = {
        "instance_id": instance_id_for_key(kp.public_bytes),
        "chute_id": chute_id_for_model(model), "model": model,
        "hotkey": "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
        "e2e_pubkey": kp.public_b64, "e2e_versions": [1, 2],
        "receipt_pubkey": base64.b64encode(bytes(range(32))).decode(),
        "tdx_quote": base64.b64encode(vector_quote()).decode(),
        "gpu_evidence": vector_gpus(), "simulated": False,
    }

    async def attest(_request: Request) -> Response:
        if attest_delay:
            await asyncio.sleep(attest_delay)
        return JSONResponse(answer)

    return Starlette(routes=[Route("/attest", attest, methods=["POST"])])
