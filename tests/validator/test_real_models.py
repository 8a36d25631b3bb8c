"""Three miners claim the same model (tests/real_engine.py's tiny Llama under a 7B name):

* honest: the miner's upstream backend in front of ``transformers serve`` (a real
  third-party engine, bf16 + SDPA: other kernels than the validator's fp32 reference);
* toy: the embedded toy model relabelled with the big model's name (its attested
  workload manifest still declares the embedded engine and its byte tokenizer);
* inflator: an upstream that streams one character and reports
  ``completion_tokens = max_tokens`` (a fault no real engine produces, so a stand-in).

Before token counting and logprob verification the honest miner got the least weight
of the three. Now the validator counts tokens with the chute's tokenizer and scores a
sample teacher-forced under its reference: only the honest miner earns.
"""

from __future__ import annotations

import json

import pytest

from chutes_subnet.inference import OpenAIUpstreamBackend, make_backend
from chutes_subnet.validator import BenchmarkConfig, Validator, ValidatorConfig, ValidatorState
from chutes_subnet.validator.reference import ChuteReference, ReferenceBook, ReferenceModel
from tests import validator_fixtures as vf
from tests.real_engine import MODEL_NAME
from tests.servers import UvicornThread


async def _inflating_upstream(scope, receive, send):
    """One character, then usage claiming the whole budget."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/v1/models":  # loaded: like any engine, it lists its model
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"object": "list", "data": []}'})
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    request = json.loads(body)
    chat = scope["path"] == "/v1/chat/completions"
    kind = "chat.completion.chunk" if chat else "text_completion"
    choice = {"index": 0, "delta": {"content": "x"}} if chat else {"index": 0, "text": "x"}
    events = [
        {"id": "c", "object": kind, "created": 1,
         "choices": [{**choice, "finish_reason": "length"}]},
        {"id": "c", "object": kind, "created": 1, "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": request["max_tokens"]}},
    ]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    await send({"type": "http.response.body", "body": payload + b"data: [DONE]\n\n"})


@pytest.fixture(scope="module")
def inflator():
    with UvicornThread(_inflating_upstream) as server:
        yield server


@pytest.fixture(scope="module")
def subnet(tiny_engine, inflator, tmp_path_factory):
    backends = {
        "honest": (MODEL_NAME, lambda: OpenAIUpstreamBackend(
            url=tiny_engine.url, model_id=MODEL_NAME, upstream_model=tiny_engine.upstream_model,
            timeout=60.0)),
        "toy": (MODEL_NAME, lambda: make_backend("embedded", model_id=MODEL_NAME)),
        "inflator": (MODEL_NAME, lambda: OpenAIUpstreamBackend(
            url=inflator.url, model_id=MODEL_NAME, timeout=10.0)),
    }
    with vf.local_subnet(tmp_path_factory.mktemp("real"), dict.fromkeys(backends),
                         backends=backends) as s:
        yield s


@pytest.fixture(scope="module")
def references(tiny_model_dir):
    model = ReferenceModel(tiny_model_dir, torch_threads=1)
    return ReferenceBook({MODEL_NAME: ChuteReference(model)})


def _config(**kw) -> ValidatorConfig:
    bench = BenchmarkConfig(prompts_per_miner=2, max_tokens=16, verify_sample=2)
    return ValidatorConfig(concurrency=3, timeout=30.0, dangerous_accept_simulated_tee=True,
                           benchmark=bench, **kw)


async def test_only_the_honest_real_engine_miner_earns(subnet, references, tmp_path):
    validator = Validator(_config(), chain=subnet.chain, wallet=subnet.validator_wallet,
                          verifier=vf.dev_verifier(), state=ValidatorState(tmp_path / "v.sqlite"),
                          references=references)
    try:
        report = await validator.run_round()
    finally:
        await validator.aclose()
    honest, toy, inflator = (report.result_for(subnet.by_name(n).uid)
                             for n in ("honest", "toy", "inflator"))
    assert honest.ok, (honest.reason, honest.detail_text)
    assert honest.successes == honest.requests == 3            # 2 prompts + 1 canary repeat
    assert honest.verified >= 2                                # logprob-verified answers
    assert honest.completion_tokens == 3 * 16                  # counted by the validator
    assert report.weights == {honest.uid: 1.0}
    assert inflator.reason == "wrong_output:usage", inflator
    assert "claims 16 completion tokens" in inflator.detail_text
    assert "counts 1" in inflator.detail_text
    # the toy measures its true release (embedded engine, byte tokenizer) into RTMR3: its
    # manifest names another tokenizer than the chute's reference, so it is never scored
    # (had it hidden that, its tokens fail the logprob check: tests/validator/test_logprobs.py)
    assert toy.reason == "unverified", toy
    assert "another tokenizer" in toy.detail_text
    assert toy.attestation is not None and toy.attestation.manifest_sha384
    for bad in (toy, inflator):
        assert report.ema[bad.uid] == 0.0 and bad.uid not in report.weights


async def test_without_a_reference_no_real_model_is_scored(subnet, tmp_path):
    validator = Validator(_config(set_weights=False), chain=subnet.chain,
                          wallet=subnet.validator_wallet, verifier=vf.dev_verifier(),
                          state=ValidatorState(":memory:"))
    try:
        report = await validator.run_round()
    finally:
        await validator.aclose()
    for miner in subnet.miners:
        res = report.result_for(miner.uid)
        assert res.attested and res.reason == "unverified", (miner.name, res.reason)
        assert res.requests == 0                                # nothing was sent
    assert report.weights == {}
