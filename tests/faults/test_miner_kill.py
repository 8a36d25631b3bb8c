"""A miner SIGKILLed mid-stream: the client gets a clear error, never a silently
truncated answer; the gateway stops offering the dead instance and new requests
(including one queued behind the stream on the dead miner) are served elsewhere.

Real processes: three miner processes (``--invoke_auth validator``), an in-process
gateway on loopback that signs forwards as the validator, the OpenAI SDK with the
E2EE transports (v2 and v1).
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import openai
import pytest

from chutes_subnet.client import AsyncE2EETransport
from chutes_subnet.errors import StreamIntegrityError
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.inference import DEFAULT_MODEL_ID, DEFAULT_SEED, reference_completion
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from tests.reliability_harness import LoopbackSubnet, miner_counter
from tests.servers import UvicornThread

# slow: starts three miner processes (about 20 s on 2 busy cores)
pytestmark = pytest.mark.slow

LONG = 2000  # tokens: the stream is still running when the miner dies
PATH = "/v1/chat/completions"


def _messages(tag: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"kill test {tag}"}]


def _sdk(url: str, key: str, version: int) -> tuple[openai.AsyncOpenAI, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=AsyncE2EETransport(versions=(version,), verify="gateway"), timeout=60)
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, http_client=http,
                              max_retries=0), http


class _Stream:
    """Reads one SDK stream in a task; records the text and how it ended."""

    def __init__(self, client: openai.AsyncOpenAI, tag: str) -> None:
        self.client, self.tag = client, tag
        self.text: list[str] = []
        self.first = asyncio.Event()
        self.error: BaseException | None = None
        self.completed = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            stream = await self.client.chat.completions.create(
                model=DEFAULT_MODEL_ID, messages=_messages(self.tag), max_tokens=LONG,
                stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    self.text.append(chunk.choices[0].delta.content)
                    self.first.set()
            self.completed = True
        except (openai.APIError, StreamIntegrityError) as exc:
            self.error = exc
        finally:
            self.first.set()


async def _until_in_flight(miner, n: int, deadline_s: float = 30.0) -> None:
    """Poll the miner's in-flight gauge (without blocking the event loop)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            text = (await http.get(miner.url + "/metrics")).text
            if f"chutes_miner_in_flight {float(n)}" in text:
                return
            assert loop.time() < end, f"{miner.name} never had {n} requests in flight"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def subnet(tmp_path_factory):
    with LoopbackSubnet(tmp_path_factory.mktemp("kill")) as s:
        for name in ("victim-v2", "victim-v1", "spare"):
            s.add_miner(name, max_concurrency=4, request_timeout=60.0)
        s.wait_miners()
        yield s


async def test_kill_mid_stream_is_a_clear_error_and_traffic_moves(subnet):
    published = MemoryInstanceRegistry()
    report = await subnet.publish(published)
    assert all(r.ok for r in report.results), [(r.uid, r.reason) for r in report.results]
    records = {r.hotkey: r for r in published.list_verified()}
    rec = {m.name: records[m.hotkey] for m in subnet.miners}

    # the gateway's registry starts with one victim at a time, so each stream is pinned
    registry = MemoryInstanceRegistry()
    # a long failure cooldown: the bench must outlast this test's slowest step
    app, key = subnet.gateway_app(registry, MemoryNonceStore(),
                                  GatewayConfig(failure_cooldown=120.0))
    with UvicornThread(app) as gw:
        sdk2, http2 = _sdk(gw.url, key, 2)
        sdk1, http1 = _sdk(gw.url, key, 1)
        queued_sdk, queued_http = _sdk(gw.url, key, 2)
        try:
            registry.upsert(rec["victim-v2"])
            s2 = _Stream(sdk2, "v2")
            await asyncio.wait_for(s2.first.wait(), 30)
            # a second request to the same miner waits behind the stream (batch-1 model)
            queued = asyncio.create_task(queued_sdk.chat.completions.create(
                model=DEFAULT_MODEL_ID, messages=_messages("queued"), max_tokens=4))
            await _until_in_flight(subnet.miner("victim-v2"), 2)
            registry.remove(rec["victim-v2"].hotkey, rec["victim-v2"].instance_id)
            registry.upsert(rec["victim-v1"])
            s1 = _Stream(sdk1, "v1")
            await asyncio.wait_for(s1.first.wait(), 30)
            assert s2.error is None and s1.error is None and s2.text and s1.text
            registry.upsert(rec["victim-v2"])
            registry.upsert(rec["spare"])

            subnet.miner("victim-v2").kill()
            subnet.miner("victim-v1").kill()
            await asyncio.wait_for(asyncio.gather(s2.task, s1.task), 30)

            for s in (s2, s1):
                # never a silently truncated answer: the SDK raised, with a clear reason
                assert not s.completed, f"{s.tag}: truncated stream reported as complete"
                assert isinstance(s.error, openai.APIError), (s.tag, repr(s.error))
                # the gateway's e2e_error event, surfaced by the SDK as the error body
                assert s.error.body == "upstream interrupted", (s.tag, s.error.body)

            # the request queued on the dead miner was retried elsewhere, transparently
            answer = await asyncio.wait_for(queued, 30)
            expected = reference_completion(PATH, {"messages": _messages("queued"),
                                                   "max_tokens": 4}, seed=DEFAULT_SEED)
            assert answer.choices[0].message.content == expected

            # the gateway benched both dead instances: discovery offers only the spare
            async with httpx.AsyncClient(timeout=10) as plain:
                offered = (await plain.get(f"{gw.url}/e2e/instances/{rec['spare'].chute_id}",
                                           headers={"Authorization": f"Bearer {key}"})).json()
            assert [i["instance_id"] for i in offered["instances"]] == [rec["spare"].instance_id]
            # ... and its journal records both broken streams as interrupted, not as clean 200s
            async with httpx.AsyncClient(timeout=10) as plain:
                seen = (await plain.get(f"{gw.url}/v1/requests",
                                        headers={"Authorization": f"Bearer {key}"})).json()
            broken = {e["instance_id"] for e in seen["requests"] if e["interrupted"]}
            assert broken == {rec["victim-v2"].instance_id, rec["victim-v1"].instance_id}

            # new requests on both versions (pools still holding dead nonces) succeed
            for sdk, tag in ((sdk2, "after-v2"), (sdk1, "after-v1")):
                out = await sdk.chat.completions.create(
                    model=DEFAULT_MODEL_ID, messages=_messages(tag), max_tokens=4)
                assert out.choices[0].message.content == reference_completion(
                    PATH, {"messages": _messages(tag), "max_tokens": 4}, seed=DEFAULT_SEED)
        finally:
            for http in (http2, http1, queued_http):
                await http.aclose()

    for s in (s2, s1):
        # what did arrive is genuine: a strict prefix of this prompt's own answer
        full = await asyncio.to_thread(reference_completion, PATH, {
            "messages": _messages(s.tag), "max_tokens": LONG}, seed=DEFAULT_SEED)
        got = "".join(s.text)
        assert 0 < len(got) < len(full) and full.startswith(got), s.tag

    spare = subnet.miner("spare").metrics()
    # spare served: 1 benchmark prompt + the queued request + 2 new ones, each once
    assert miner_counter(spare, "chutes_miner_requests", route="invoke", status="200") == 4
    assert miner_counter(spare, "chutes_miner_errors", reason="replayed") == 0
    assert not subnet.miner("victim-v2").alive()
    assert subnet.miner("victim-v2").proc.returncode == -signal.SIGKILL
