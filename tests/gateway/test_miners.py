"""The gateway's miner client: a miner that breaks HTTP is a failed instance.

A raw TCP "miner" on loopback answers with a garbage status line, an oversized head,
or a body cut short; through the real gateway each is a 502 with ``X-E2E-Retry:
instance`` (the client re-seals for another instance) and the instance is benched.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from chutes_subnet.e2ee import KeyPair
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.miners import MinerClient, MinerConnectionError
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.httpclient import MAX_HEAD_BYTES
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from tests.gateway.test_app import CHUTE, MODEL, Clock, Stack, discover, invoke
from tests.gateway_fixtures import record_for
from tests.servers import UvicornThread

_REPLIES = {
    "garbage": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "huge_head": b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n",
    "cut_body": b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100,
}


class _RawMiner(socketserver.ThreadingTCPServer):
    """Reads one request head, writes ``reply``, closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            if not part:
                return
            data += part
        sock.sendall(self.server.reply)  # type: ignore[attr-defined]


@pytest.fixture
def raw_miner(request: pytest.FixtureRequest) -> Iterator[_RawMiner]:
    server = _RawMiner(_REPLIES[request.param])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("raw_miner,reason", [
    ("garbage", "miner_unreachable"), ("huge_head", "miner_unreachable"),
    ("cut_body", "miner_error"),
], indirect=["raw_miner"])
def test_broken_http_from_a_miner_is_502_retry_elsewhere_and_benched(
        raw_miner: _RawMiner, reason: str) -> None:
    kp = KeyPair.generate()
    registry, keys = MemoryInstanceRegistry(), MemoryApiKeyStore()
    secret, _ = keys.create("k")
    app = create_app(GatewayConfig(read_timeout=5), registry=registry,
                     nonce_store=MemoryNonceStore(), keys=keys, usage=MemoryUsageMeter())
    registry.upsert(record_for(kp, raw_miner.url, chute_id=CHUTE, model=MODEL))
    with UvicornThread(app) as gw:
        s = Stack(gw.url, keys, MemoryUsageMeter(), registry, Clock(), {}, [], secret, "")
        inst = discover(s)[kp.instance_id]
        r, _ = invoke(s, inst, inst["nonces"][0])
    assert r.status_code == 502 and r.json()["reason"] == reason
    assert r.headers["x-e2e-retry"] == "instance"
    assert app.state.gateway.balancer.is_benched(kp.instance_id)


@pytest.mark.parametrize("raw_miner", ["garbage"], indirect=True)
async def test_failure_before_the_head_is_before_response(raw_miner: _RawMiner) -> None:
    client = MinerClient(read_timeout=5)
    with pytest.raises(MinerConnectionError) as info:
        await client.post(raw_miner.url + "/e2e/invoke", {}, b"x")
    assert info.value.before_response is True
    await client.aclose()


@pytest.mark.parametrize("raw_miner", ["cut_body"], indirect=True)
async def test_body_cut_short_is_after_response(raw_miner: _RawMiner) -> None:
    client = MinerClient(read_timeout=5)
    resp = await client.post(raw_miner.url + "/e2e/invoke", {"X-A": "1"}, b"x")
    assert resp.status == 200 and resp.headers["Content-Length"] == "5000"
    with pytest.raises(MinerConnectionError) as info:
        await resp.read_bounded(10_000)
    assert info.value.before_response is False
    resp.release()
    resp = await client.post(raw_miner.url + "/e2e/invoke", {}, b"x")
    chunks = resp.iter_chunks()
    with pytest.raises(MinerConnectionError):
        async for _ in chunks:
            pass
    resp.release()
    await client.aclose()
