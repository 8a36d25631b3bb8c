"""A miner's host cannot tell the validator's benchmark from organic traffic.

The host sits between the network and the TD: it sees every request to the miner in
the clear up to the ciphertext (request line, header names, order and values, body
size). Here a host proxy records exactly that for a few hundred ``/e2e/invoke``
requests: organic ones (clients -> the validator's in-process gateway -> miner) and
benchmark ones (validator rounds). Classifiers trained on half of them (the host
learning what each kind looks like) then label the other half. Through the organic
path they do no better than chance; the old direct path (an httpx client of its own)
is recognised every time, which shows the test can fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from chutes_subnet.auth import forward_signer
from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
from chutes_subnet.gateway.app import create_app
from chutes_subnet.gateway.config import GatewayConfig
from chutes_subnet.gateway.usage import MemoryUsageMeter
from chutes_subnet.inference import DEFAULT_MODEL_ID
from chutes_subnet.nonces import MemoryNonceStore
from chutes_subnet.registry import MemoryInstanceRegistry
from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
from chutes_subnet.wire.call import SealTarget, seal_call
from chutes_subnet.wire.protocol import E2EE_VERSION_V2, chute_id_for_model
from tests import validator_fixtures as vf
from tests.servers import free_port

# slow: a few hundred requests through a recording host proxy (about 8 s on 2 busy cores)
pytestmark = pytest.mark.slow

CHUTE = chute_id_for_model(DEFAULT_MODEL_ID)
ORGANIC, BENCH = "organic", "benchmark"
CHANCE_BOUND = 0.65   # ~3 standard deviations above 0.5 for ~100 held-out requests


@dataclass
class Seen:
    label: str
    headers: list[tuple[str, str]]
    body_bytes: int


class HostProxy:
    """A TCP proxy in front of the miner that records each HTTP request head."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.seen: list[Seen] = []
        self.label = ORGANIC           # ground truth, known to the test only
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> HostProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pipe = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                request_line, fields = lines[0], [ln for ln in lines[1:] if ln]
                headers = [(k.strip().lower(), v.strip())
                           for k, v in (f.split(":", 1) for f in fields)]
                length = int(dict(headers).get("content-length", "0"))
                body = await reader.readexactly(length)
                if request_line.startswith("POST /e2e/invoke "):
                    self.seen.append(Seen(self.label, headers, length))
                up_writer.write(head + body)
                await up_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            pipe.cancel()
            up_writer.close()
            writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()


# --- the host's classifiers ---------------------------------------------------------------

def _features(seen: list[Seen]) -> list[tuple]:
    """Header names in order, values that are not per-request unique, path, size."""
    distinct: dict[str, set[str]] = {}
    for s in seen:
        for k, v in s.headers:
            distinct.setdefault(k, set()).add(v)
    out = []
    for s in seen:
        shape = tuple((k, v if len(distinct[k]) <= 10 and k != "content-length" else "*")
                      for k, v in s.headers)
        out.append((shape, s.body_bytes))
    return out


def _lookup_accuracy(train, test) -> float:
    """Majority label per exact (head shape, size); unseen keys: per head shape."""
    by_key: dict[tuple, Counter] = {}
    by_shape: dict[tuple, Counter] = {}
    for (shape, size), label in train:
        by_key.setdefault((shape, size), Counter())[label] += 1
        by_shape.setdefault(shape, Counter())[label] += 1
    hits = 0
    for (shape, size), label in test:
        votes = by_key.get((shape, size)) or by_shape.get(shape) or Counter({ORGANIC: 1})
        hits += votes.most_common(1)[0][0] == label
    return hits / len(test)


def _threshold_accuracy(train, test) -> float:
    """The best single size threshold learned on ``train`` (either direction)."""
    sizes = sorted({size for (_, size), _ in train})
    best = (0.0, 0, BENCH)
    for cut in sizes:
        for below in (ORGANIC, BENCH):
            other = BENCH if below == ORGANIC else ORGANIC
            acc = sum((below if size <= cut else other) == label
                      for (_, size), label in train) / len(train)
            best = max(best, (acc, cut, below))
    _, cut, below = best
    other = BENCH if below == ORGANIC else ORGANIC
    return sum((below if size <= cut else other) == label
               for (_, size), label in test) / len(test)


def _host_accuracy(seen: list[Seen]) -> tuple[float, float]:
    rows = list(zip(_features(seen), (s.label for s in seen), strict=True))
    random.Random(7).shuffle(rows)
    half = len(rows) // 2
    return _lookup_accuracy(rows[:half], rows[half:]), _threshold_accuracy(rows[:half], rows[half:])


# --- the scenario ---------------------------------------------------------------------------

def _organic_prompt(rng: random.Random) -> tuple[str, dict]:
    words = ["the", "river", "compiler", "why", "does", "my", "code", "fail", "please",
             "explain", "kernel", "summary", "of", "this", "text", "and", "list", "facts"]
    text = " ".join(rng.choice(words) for _ in range(int(rng.lognormvariate(3.2, 1.0)) + 2))
    if rng.random() < 0.3:
        return "/v1/completions", {"model": DEFAULT_MODEL_ID, "prompt": text[:1500],
                                   "max_tokens": 4, "stream": True}
    return "/v1/chat/completions", {"model": DEFAULT_MODEL_ID, "max_tokens": 4, "stream": True,
                                    "messages": [{"role": "user", "content": text[:1500]}]}


async def _organic_traffic(gateway_url: str, secret: str, n: int, rng: random.Random) -> None:
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=30) as client:
        nonces: list[str] = []
        target: SealTarget | None = None
        for _ in range(n):
            if not nonces:
                info = (await client.get(f"{gateway_url}/e2e/instances/{CHUTE}",
                                         headers=auth)).json()["instances"][0]
                nonces = list(info["nonces"])
                from base64 import b64decode

                target = SealTarget(info["instance_id"], b64decode(info["e2e_pubkey"]),
                                    (E2EE_VERSION_V2,))
            path, payload = _organic_prompt(rng)
            call = seal_call(target, chute_id=CHUTE, nonce=nonces.pop(), path=path,
                             stream=True, payload=payload, version=E2EE_VERSION_V2,
                             api_key=secret)
            async with client.stream("POST", f"{gateway_url}/e2e/invoke", content=call.body,
                                     headers=call.headers) as resp:
                assert resp.status_code == 200, await resp.aread()
                async for _ in resp.aiter_raw():
                    pass


@pytest.fixture
def subnet(tmp_path):
    with vf.local_subnet(tmp_path, {"m": None}) as s:
        yield s


async def test_host_cannot_tell_benchmarks_from_organic_requests(subnet, tmp_path):
    miner = subnet.by_name("m")
    proxy = await HostProxy(miner.server.port).start()
    await subnet.chain.serve_axon(miner.hotkey, "127.0.0.1", proxy.port)  # all traffic via host
    registry = MemoryInstanceRegistry()
    keys = MemoryApiKeyStore()
    secret, _ = keys.create("organic-client")
    app = create_app(GatewayConfig(nonces_per_instance=32), registry=registry,
                     nonce_store=MemoryNonceStore(), keys=keys, usage=MemoryUsageMeter(),
                     forward_signer=forward_signer(subnet.validator_wallet))
    gw_port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=gw_port,
                                           log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    bench = BenchmarkConfig(prompts_per_miner=30, max_tokens=4, verify_sample=1)
    validator = Validator(ValidatorConfig(concurrency=1, timeout=20.0,
                                          dangerous_accept_simulated_tee=True,
                                          rechallenge_probability=0.0, set_weights=False,
                                          benchmark=bench),
                          chain=subnet.chain, wallet=subnet.validator_wallet,
                          verifier=vf.dev_verifier(), state=ValidatorState(":memory:"),
                          registry=registry)
    validator.use_gateway(app.state.gateway)
    rng = random.Random(11)
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event to await
            await asyncio.sleep(0.02)
        proxy.label = BENCH
        first = await validator.run_round()              # publishes the instance
        assert first.result_for(miner.uid).ok, first.result_for(miner.uid)
        proxy.label = ORGANIC
        await _organic_traffic(f"http://127.0.0.1:{gw_port}", secret, 120, rng)
        proxy.label = BENCH
        for _ in range(4):
            report = await validator.run_round()
            assert report.result_for(miner.uid).ok
        proxy.label = ORGANIC
        await _organic_traffic(f"http://127.0.0.1:{gw_port}", secret, 30, rng)

        seen = list(proxy.seen)
        # the first round ran before any organic traffic existed: natural sizes
        counts = Counter(s.label for s in seen)
        assert counts[ORGANIC] == 150 and counts[BENCH] == 150
        lookup, threshold = _host_accuracy(seen)
        assert lookup <= CHANCE_BOUND and threshold <= CHANCE_BOUND, (lookup, threshold)

        # control: the old path (the validator's own httpx client) is spotted at once
        proxy.seen.clear()
        old = Validator(ValidatorConfig(concurrency=1, timeout=20.0, set_weights=False,
                                        dangerous_accept_simulated_tee=True, benchmark=bench),
                        chain=subnet.chain, wallet=subnet.validator_wallet,
                        verifier=vf.dev_verifier(), state=ValidatorState(":memory:"))
        old.bench_http = old.http
        old.shapes = app.state.gateway.shapes.snapshot
        proxy.label = BENCH
        await old.run_round()
        await old.aclose()
        proxy.label = ORGANIC
        await _organic_traffic(f"http://127.0.0.1:{gw_port}", secret, 30, rng)
        lookup_old, _ = _host_accuracy(list(proxy.seen))
        assert lookup_old >= 0.95, lookup_old
    finally:
        await validator.aclose()
        server.should_exit = True
        await serving
        await proxy.stop()


def test_shape_sample_is_bounded_and_uniform():
    from chutes_subnet.gateway.shapes import RequestShapes

    shapes = RequestShapes(capacity=100, rng=random.Random(1))
    for i in range(10_000):
        shapes.record(i, i % 2 == 0, "/v1/completions")
    sample = shapes.snapshot()
    assert len(sample) == len(shapes) == 100
    assert 3000 < sum(s.request_bytes for s in sample) / 100 < 7000   # not just the first 100
    with pytest.raises(ValueError):
        RequestShapes(capacity=0)


def test_prompts_take_organic_paths_and_sizes():
    from chutes_subnet.validator.prompts import BenchPrompt, lengthen, on_path

    chat = BenchPrompt("/v1/chat/completions", {
        "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
        "max_tokens": 8, "temperature": 0, "seed": 0, "stream": True,
        "stream_options": {"include_usage": True}}, verify=True, canary=3)
    text = on_path(chat, "/v1/completions")
    assert text.body == {"prompt": "S\nQ\n", "max_tokens": 8, "temperature": 0, "stream": True}
    assert (text.verify, text.canary) == (True, 3)
    back = on_path(text, "/v1/chat/completions")
    assert back.body["messages"] == [{"role": "user", "content": "S\nQ"}]
    assert on_path(chat, "/v1/embeddings") is chat
    longer = lengthen(chat.path, chat.body, 37)
    assert len(longer["messages"][-1]["content"]) == 1 + 37
    assert chat.body["messages"][-1]["content"] == "Q"          # the original is untouched
    assert lengthen(text.path, text.body, 0) is text.body
