"""Oversized, decompression-bomb, slow and header-flood requests against the real stack.

Every abuse must end in a bounded refusal: a 4xx answer (never 5xx), within a bounded
time, with memory bounded by the configured limits.
"""

from __future__ import annotations

import base64
import gzip
import socket
import time
import tracemalloc
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from chutes_subnet.e2ee import PADDING_NONE, KeyPair, RequestContext, _kem, v2
from chutes_subnet.e2ee._symmetric import Aead
from chutes_subnet.errors import PayloadTooLargeError
from chutes_subnet.wire.protocol import MAX_DECOMPRESSED_BYTES
from tests.security_fixtures import BODY_TIMEOUT, CHAT, LIMIT, Stack, security_stack

_n = iter(range(1, 10**9))


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with security_stack(str(tmp_path_factory.mktemp("wallets"))) as s:
        yield s


def _nonce() -> str:
    return f"{next(_n):032x}"


def _invoke_headers(s: Stack, nonce: str) -> dict[str, str]:
    return {"X-Chute-Id": s.inst.chute_id, "X-Instance-Id": s.inst.instance_id,
            "X-E2E-Nonce": nonce, "X-E2E-Stream": "false", "X-E2E-Path": CHAT,
            "X-E2E-Version": "2", "Content-Type": "application/octet-stream",
            "Authorization": f"Bearer {s.api_key}"}


def _raw_exchange(url: str, request: bytes, *, linger: float) -> tuple[bytes, float]:
    """Send ``request`` on a fresh socket; read until the server answers and closes or
    ``linger`` seconds pass. Returns (bytes read, seconds until the first byte)."""
    parts = urlsplit(url)
    start = time.monotonic()
    first = -1.0
    out = b""
    with socket.create_connection((parts.hostname, parts.port), timeout=linger) as sock:
        sock.sendall(request)
        sock.settimeout(0.2)
        while time.monotonic() - start < linger:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            if first < 0:
                first = time.monotonic() - start
            out += chunk
            if b"\r\n\r\n" in out:
                break
    return out, first


def _head(path: str, headers: dict[str, str], extra: str = "") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()] + ([extra] if extra else [])
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("server", ["miner", "gateway"])
def test_declared_oversize_body_is_413_before_any_byte(stack: Stack, server: str) -> None:
    url = stack.miner_url if server == "miner" else stack.gateway_url
    head = _head("/e2e/invoke", _invoke_headers(stack, _nonce()), f"Content-Length: {LIMIT + 1}")
    answer, first = _raw_exchange(url, head, linger=5.0)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert 0 <= first < 2.0


@pytest.mark.parametrize("server", ["miner", "gateway"])
def test_chunked_oversize_body_is_413(stack: Stack, server: str) -> None:
    url = stack.miner_url if server == "miner" else stack.gateway_url

    def body() -> Iterator[bytes]:
        for _ in range(LIMIT // 16384 + 4):
            yield b"\0" * 16384

    r = httpx.post(url + "/e2e/invoke", content=body(), headers=_invoke_headers(stack, _nonce()),
                   timeout=30)
    assert r.status_code == 413
    assert r.json()["reason"] == "too_large"


def compress(data: bytes) -> bytes:
    """Real deflate (what a hostile peer sends; this project itself writes stored blocks)."""
    return gzip.compress(data, compresslevel=1)


def _bomb(s: Stack, nonce: str, size: int) -> bytes:
    """A correctly encrypted unpadded v2 envelope whose plaintext gunzips to ``size`` bytes
    (padded v2 has no gzip to inflate)."""
    ctx = RequestContext(s.inst.chute_id, s.inst.instance_id, nonce, CHAT, False, PADDING_NONE)
    kem_ct, secret = _kem.encapsulate(base64.b64decode(s.inst.e2e_pubkey))
    keys = v2._Keys(secret, kem_ct, ctx.aad(), False)
    sealed = Aead(keys.req).seal(bytes(12), compress(b" " * size), ctx.aad())
    return v2.VERSION_BYTE + kem_ct + sealed


def test_decompression_bomb_through_gateway_and_miner_is_413(stack: Stack) -> None:
    r = httpx.get(f"{stack.gateway_url}/e2e/instances/{stack.inst.chute_id}",
                  headers={"Authorization": f"Bearer {stack.api_key}"}, timeout=30)
    nonce = r.json()["instances"][0]["nonces"][0]
    bomb = _bomb(stack, nonce, MAX_DECOMPRESSED_BYTES + 1024)
    assert len(bomb) < LIMIT  # small on the wire, 16 MiB once inflated
    r = httpx.post(stack.gateway_url + "/e2e/invoke", content=bomb,
                   headers=_invoke_headers(stack, nonce), timeout=30)
    assert r.status_code == 413 and r.json()["reason"] == "too_large"


def test_decompression_bomb_memory_is_bounded_by_the_limit() -> None:
    kp = KeyPair.generate()
    ctx = RequestContext("c", "i", "n", CHAT, False, PADDING_NONE)
    kem_ct, secret = _kem.encapsulate(kp.public_bytes)
    keys = v2._Keys(secret, kem_ct, ctx.aad(), False)
    inflated = 8 * MAX_DECOMPRESSED_BYTES  # 128 MiB of plaintext in ~130 KB
    blob = v2.VERSION_BYTE + kem_ct + Aead(keys.req).seal(
        bytes(12), compress(b"\0" * inflated), ctx.aad())
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLargeError):
            v2.open_request(kp, ctx, blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_DECOMPRESSED_BYTES + 4 * 1024 * 1024, peak


def test_slow_body_to_the_miner_is_cut_at_the_body_timeout(stack: Stack) -> None:
    headers = _invoke_headers(stack, _nonce())
    head = _head("/e2e/invoke", headers, "Content-Length: 4096") + b"\0" * 100
    answer, first = _raw_exchange(stack.miner_url, head, linger=BODY_TIMEOUT + 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT * 0.8 <= first <= BODY_TIMEOUT + 3


def test_slow_body_to_the_gateway_is_cut(stack: Stack) -> None:
    headers = _invoke_headers(stack, _nonce())
    head = _head("/e2e/invoke", headers, "Content-Length: 4096") + b"\0" * 100
    answer, _ = _raw_exchange(stack.gateway_url, head, linger=BODY_TIMEOUT + 2)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]


def _header_flood(url: str) -> bytes:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (1 << 20) + b"\r\n\r\n"
    answer, _ = _raw_exchange(url, head, linger=5.0)
    return answer


@pytest.mark.parametrize("server", ["miner", "gateway"])
def test_header_flood_is_refused_with_4xx(stack: Stack, server: str) -> None:
    url = stack.miner_url if server == "miner" else stack.gateway_url
    assert _header_flood(url)[9:10] == b"4"


def test_h11_parser_bounds_headers() -> None:
    """The mitigation for F3: uvicorn's h11 parser refuses a 1 MiB header."""
    from fastapi import FastAPI

    from tests.servers import UvicornThread

    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    with UvicornThread(app, http="h11", h11_max_incomplete_event_size=64 * 1024) as srv:
        assert _header_flood(srv.url)[9:12] in (b"400", b"431")
        assert httpx.get(srv.url + "/health", timeout=10).status_code == 200
