"""Token coalescing on a real miner (uvicorn, embedded model, simulated TEE): padded v2
streams carry two tokens per frame when they are ready together, the first token goes
alone, unpadded v2 and v1 keep one frame per token, ``stream_coalesce_ms=0`` turns it
off, and what a router can do to a coalesced stream still fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.e2ee import PADDING_NONE
from chutes_subnet.errors import StreamIntegrityError
from chutes_subnet.inference import DEFAULT_SEED, make_backend, reference_completion
from chutes_subnet.miner import MinerConfig, create_app
from chutes_subnet.sse import SSEParser
from tests.miner_fixtures import CHAT, DEV_MINER_HOTKEY, payload, sealed, stream_text
from tests.servers import UvicornThread

EXPECTED = reference_completion(CHAT, payload(), seed=DEFAULT_SEED)


class _Burst:
    """The embedded model, but its stream arrives all at once (an upstream that flushed
    several tokens in one read): what coalescing packs is then deterministic."""

    def __init__(self) -> None:
        self._inner = make_backend("embedded")
        self.model_id = self._inner.model_id

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._inner.complete(path, body)

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        chunks = [chunk async for chunk in self._inner.stream(path, body)]
        for chunk in chunks:
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def _start(**config: Any) -> tuple[UvicornThread, Any]:
    app = create_app(MinerConfig(tee="simulated", invoke_auth="none", **config),
                     hotkey_ss58=DEV_MINER_HOTKEY, backend=_Burst(),
                     provider=SimulatedProvider(gpu_count=1), gate=None)
    return UvicornThread(app).start(), app.state.instance


@pytest.fixture(scope="module")
def miner() -> Iterator[tuple[str, Any]]:
    server, inst = _start()
    yield server.url, inst
    server.stop()


def _invoke(url: str, inst: Any, **kw: Any) -> tuple[httpx.Response, Any]:
    headers, blob, session = sealed(inst, stream=True, **kw)
    r = httpx.post(url + "/e2e/invoke", content=blob, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r, session


def _frames(raw: bytes) -> list[str]:
    return [json.loads(d)["e2e"] for d in SSEParser().feed(raw)
            if d != "[DONE]" and "e2e" in json.loads(d)]


def test_padded_v2_coalesces_after_the_first_token(miner) -> None:
    url, inst = miner
    r, session = _invoke(url, inst)
    frames = _frames(r.content)
    opener = session.stream_opener()
    lines_per_frame = [len(opener.open_lines(f)) for f in frames]
    # 12 tokens: the first alone (time to first token), then two per 512-byte bucket
    assert lines_per_frame == [1, 2, 2, 2, 2, 2, 1]
    assert len({len(f) for f in frames}) == 1            # one frame size throughout
    assert stream_text(2, session, r.content) == EXPECTED


@pytest.mark.parametrize("version", [1, 2])
def test_formats_that_cannot_coalesce_send_one_frame_per_token(miner, version: int) -> None:
    url, inst = miner
    r, session = _invoke(url, inst, version=version, padding=PADDING_NONE)
    assert len(_frames(r.content)) == 12
    assert stream_text(version, session, r.content) == EXPECTED


def test_zero_window_turns_coalescing_off() -> None:
    server, inst = _start(stream_coalesce_ms=0)
    try:
        r, session = _invoke(server.url, inst)
        assert len(_frames(r.content)) == 12
        assert stream_text(2, session, r.content) == EXPECTED
    finally:
        server.stop()


def test_coalesce_window_is_bounded() -> None:
    with pytest.raises(ValueError, match="stream_coalesce_ms"):
        MinerConfig(tee="simulated", stream_coalesce_ms=251)
    with pytest.raises(ValueError, match="stream_coalesce_ms"):
        MinerConfig(tee="simulated", stream_coalesce_ms=-1)


def test_router_cannot_strip_padding_or_split_coalesced_frames(miner) -> None:
    url, inst = miner
    # stripping the padding negotiation (which coalescing needs): the envelope does not open
    headers, blob, _ = sealed(inst, stream=True)
    del headers["X-E2E-Padding"]
    r = httpx.post(url + "/e2e/invoke", content=blob, headers=headers, timeout=30)
    assert r.status_code == 400 and r.json()["reason"] == "bad_envelope"
    # dropping a coalesced frame (two tokens) fails at the next frame
    r, session = _invoke(url, inst)
    events = r.content.split(b"\n\n")
    del events[2]
    with pytest.raises(StreamIntegrityError):
        stream_text(2, session, b"\n\n".join(events))
