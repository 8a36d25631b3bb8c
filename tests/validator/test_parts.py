"""Validator parts: prompts, state file, score table, failures, stream checks, CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chutes_subnet.validator as validator_pkg
from chutes_subnet import receipts
from chutes_subnet.asgi import invoke_headers, read_body
from chutes_subnet.attestation import Policy, Verifier
from chutes_subnet.chain import Neuron, WeightsResult
from chutes_subnet.e2ee import KeyPair, v2
from chutes_subnet.inference import prepare
from chutes_subnet.receipts import ReceiptSigner
from chutes_subnet.sse import format_event
from chutes_subnet.validator import (
    AttestationSummary,
    AttestedInstance,
    Attestor,
    BenchmarkConfig,
    BenchPrompt,
    EvaluationFailure,
    MinerResult,
    RoundReport,
    ScoreEntry,
    ValidatorConfig,
    ValidatorState,
    ValidatorStateError,
    build_score_table,
    format_score_table,
    miner_prompts,
    stream_prompt,
)
from chutes_subnet.validator.cli import main as cli_main
from chutes_subnet.validator.failures import from_http_error
from chutes_subnet.wallets import ensure_dev_wallet
from chutes_subnet.wire.protocol import chute_id_for_model

SEED = bytes(range(32))
BENCH = BenchmarkConfig(prompts_per_miner=5, max_tokens=16, verify_sample=2)


def test_public_names():
    import inspect

    public = {n for n in dir(validator_pkg) if not n.startswith("_") and n != "annotations"
              and not inspect.ismodule(getattr(validator_pkg, n))}
    assert sorted(validator_pkg.__all__) == sorted(public)


# --- prompts ---------------------------------------------------------------------------

def test_prompts_are_deterministic_per_seed_and_miner():
    a = miner_prompts(SEED, 3, "hk", BENCH, embedded=True)
    assert a == miner_prompts(SEED, 3, "hk", BENCH, embedded=True)
    assert a != miner_prompts(SEED, 4, "hk", BENCH, embedded=True)
    assert a != miner_prompts(bytes(32), 3, "hk", BENCH, embedded=True)
    assert a != miner_prompts(SEED, 3, "other", BENCH, embedded=True)
    assert sum(p.verify for p in a) == 2 and len(a) == 5
    with pytest.raises(ValueError):
        miner_prompts(b"short", 3, "hk", BENCH, embedded=True)


def test_upstream_prompts_carry_a_repeated_canary():
    cfg = BenchmarkConfig(prompts_per_miner=3, canary_repeats=2)
    prompts = miner_prompts(SEED, 1, "hk", cfg, embedded=False)
    canaries = [p for p in prompts if p.canary is not None]
    assert len(prompts) == 4 and len(canaries) == 2
    assert canaries[0].body == canaries[1].body and not any(p.verify for p in prompts)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(0, 65535))
def test_every_prompt_is_a_valid_embedded_request(seed, uid):
    for p in miner_prompts(seed, uid, "hk", BENCH, embedded=True):
        prepared = prepare(p.path, p.body)
        assert prepared.max_tokens == BENCH.max_tokens


# --- state -----------------------------------------------------------------------------

def _report(idx: int, ema: dict[int, float], weights: dict[int, float]) -> RoundReport:
    results = tuple(MinerResult(uid, f"hk{uid}", f"ck{uid}", "1.2.3.4:5", True, requests=2,
                                successes=2, tokens_per_s=10.0 * uid, ttft_s=0.05)
                    for uid in ema)
    return RoundReport(idx, 100 + idx, 0.0, 1.0, results, dict(ema), dict(ema), weights,
                       WeightsResult(True, "ok", 100 + idx))


def _entries(ema: dict[int, float]) -> dict[int, ScoreEntry]:
    return {u: ScoreEntry(f"hk{u}", f"ck{u}", v) for u, v in ema.items()}


def test_state_roundtrip(tmp_path):
    state = ValidatorState(tmp_path / "s.sqlite")
    assert state.load().round_index == 0 and state.load().scores == {}
    state.commit_round(_report(1, {1: 0.4, 2: 0.1}, {1: 0.8, 2: 0.2}), _entries({1: 0.4, 2: 0.1}),
                       SEED)
    state.close()
    snap = ValidatorState(tmp_path / "s.sqlite").load()
    assert snap.round_index == 1 and snap.last_block == 101 and snap.last_weights_block == 101
    assert snap.scores == _entries({1: 0.4, 2: 0.1})
    assert snap.weights == {1: 0.8, 2: 0.2}
    assert snap.results[1]["tokens_per_s"] == 10.0


def test_failed_commit_leaves_previous_round(tmp_path, monkeypatch):
    state = ValidatorState(tmp_path / "s.sqlite")
    state.commit_round(_report(1, {1: 0.4}, {1: 1.0}), _entries({1: 0.4}), SEED)
    before = state.load()
    import chutes_subnet.validator.state as state_mod

    def boom(*_a, **_k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(state_mod.json, "dumps", boom)  # fails after the DELETEs ran
    with pytest.raises(RuntimeError):
        state.commit_round(_report(2, {1: 0.9, 3: 0.5}, {1: 0.6, 3: 0.4}),
                           _entries({1: 0.9, 3: 0.5}), SEED)
    monkeypatch.undo()
    assert state.load() == before


def test_corrupt_or_foreign_state_is_refused(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    with pytest.raises(ValidatorStateError):
        ValidatorState(bad)
    newer = tmp_path / "newer.sqlite"
    ValidatorState(newer).close()
    conn = sqlite3.connect(newer)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ValidatorStateError, match="schema 99"):
        ValidatorState(newer)


# --- table and CLI -----------------------------------------------------------------------

def test_score_table_and_scores_command(tmp_path, capsys):
    path = tmp_path / "s.sqlite"
    state = ValidatorState(path)
    report = _report(4, {1: 0.4, 2: 0.0}, {1: 1.0})
    failed = MinerResult(2, "hk2", "ck2", None, False, reason="attestation:debug_td")
    report = RoundReport(4, 104, 0.0, 1.0, (report.results[0], failed), {}, {}, {1: 1.0},
                         None)
    state.commit_round(report, _entries({1: 0.4, 2: 0.0}), SEED)
    rows = build_score_table(state.load())
    state.close()
    assert [(r.uid, r.attested, r.reason, r.weight) for r in rows] == [
        (1, True, None, 1.0), (2, False, "attestation:debug_td", 0.0)]
    text = format_score_table(rows, round_index=4)
    assert "round 4" in text and "attestation:debug_td" in text and "weights sum 1.0000" in text
    assert cli_main(["scores", "--state.path", str(path)]) == 0
    assert "attestation:debug_td" in capsys.readouterr().out
    assert cli_main(["scores", "--state.path", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["uid"] == 1
    assert cli_main(["scores", "--state.path", str(tmp_path / "missing.sqlite")]) == 1


def test_stale_result_of_previous_hotkey_is_hidden():
    from chutes_subnet.validator import StateSnapshot

    snap = StateSnapshot(3, 10, {1: ScoreEntry("new", "c", 0.0)}, {},
                         {1: {"hotkey": "old", "attested": True, "tokens_per_s": 99.0}}, None)
    row = build_score_table(snap)[0]
    assert row.hotkey == "new" and not row.attested and row.tokens_per_s == 0.0


def test_cli_flags_from_environment(monkeypatch):
    from chutes_subnet.validator.cli import _config, build_parser

    monkeypatch.setenv("CHUTES_VALIDATOR_NEURON_TIMEOUT", "7.5")
    monkeypatch.setenv("CHUTES_VALIDATOR_ALLOW_INSECURE_SIMULATED_TEE", "1")
    args = build_parser().parse_args(["--neuron.concurrency", "3", "--neuron.prompts", "1"])
    cfg = _config(args)
    assert cfg.timeout == 7.5 and cfg.concurrency == 3
    # dangerous switches are never read from the environment (tests/validator/test_dev_mode.py)
    assert not cfg.dangerous_accept_simulated_tee
    assert cfg.benchmark.prompts_per_miner == 1 and cfg.benchmark.verify_sample == 1
    assert _config(build_parser().parse_args(["--dev"])).dangerous_accept_simulated_tee


def test_config_validation():
    with pytest.raises(ValueError):
        ValidatorConfig(concurrency=0)
    with pytest.raises(ValueError):
        ValidatorConfig(rechallenge_probability=1.5)
    with pytest.raises(ValueError):
        BenchmarkConfig(prompts_per_miner=2, verify_sample=3)


# --- failures ----------------------------------------------------------------------------

def test_http_errors_map_to_reason_kinds():
    req = httpx.Request("POST", "http://x")
    assert from_http_error(httpx.ReadTimeout("t", request=req), "attest").reason == "timeout"
    assert from_http_error(httpx.ConnectError("c", request=req), "attest").reason == "unreachable"
    assert from_http_error(httpx.DecodingError("d", request=req), "x").reason == "bad_response"
    with pytest.raises(ValueError):
        EvaluationFailure("made_up", "nope")


# --- the stream checks, against deliberately broken stand-in miners ------------------------

KEY = KeyPair.generate()
MODEL = "some/model"


RECEIPT_SIGNER = ReceiptSigner.generate()


def _instance(receipt_key: bytes = b"") -> AttestedInstance:
    summary = AttestationSummary(True, "inst", chute_id_for_model(MODEL), MODEL, KEY.public_b64,
                                 True, "UpToDate", "p", None, 0, (), 0.0, 1e12)
    return AttestedInstance(1, _hotkey(), "127.0.0.1:9", "inst", chute_id_for_model(MODEL), MODEL,
                            KEY.public_bytes, summary, receipt_pubkey=receipt_key)


_WALLET = {}


def _wallet(tmp_factory=None):
    if "w" not in _WALLET:
        import tempfile

        _WALLET["w"] = ensure_dev_wallet("vparts", "default", tempfile.mkdtemp())
    return _WALLET["w"]


def _hotkey() -> str:
    from chutes_subnet.wallets import hotkey_ss58

    return hotkey_ss58(_wallet())


def _miner(mode: str):
    """An ASGI stand-in that answers a v2 stream, broken in the way ``mode`` says."""

    async def app(scope, receive, send):
        body = await read_body(receive, 1 << 20)
        h = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if mode == "http500":
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        ctx = invoke_headers(h).context()
        _payload, session = v2.open_request(KEY, ctx, body)
        sealer = session.stream_sealer()
        content = os.urandom(4).hex() if mode == "random" else "hi"
        if h["x-e2e-path"] == "/v1/completions":
            chunk = {"object": "text_completion", "choices": [{"index": 0, "text": content}]}
        else:
            chunk = {"object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": content}}]}
        if mode == "badchunk":
            chunk = {"object": "nope", "choices": []}
        frames = [sealer.seal(("data: " + json.dumps(chunk)).encode()) for _ in range(3)]
        if mode == "tamper":
            raw = bytearray(base64.b64decode(frames[1]))
            raw[0] ^= 1
            frames[1] = base64.b64encode(bytes(raw)).decode()
        if mode == "nonstring":
            frames[0] = 12345
        if mode == "reorder":
            frames[0], frames[1] = frames[1], frames[0]
        claimed = {"overuse": 999, "overclaim": 8}.get(mode, 3)
        usage = {"prompt_tokens": 3, "completion_tokens": claimed}
        out = b"".join(format_event({"e2e": f}) for f in frames)
        if mode != "truncate":
            out += format_event({"e2e_final": sealer.finish(usage)})
        if mode in ("receipt", "forged_receipt"):  # signed by the attested key, or not
            signer = RECEIPT_SIGNER if mode == "receipt" else ReceiptSigner.generate()
            out += receipts.event(signer.sign(
                request_binding=session.request_binding,
                answer_sha256=hashlib.sha256(out).digest(), prompt_tokens=3,
                completion_tokens=claimed, instance_id="inst", issued_at_ms=int(time.time() * 1000)))
        out += b"data: [DONE]\n\n"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": out})

    return app


PROMPT = BenchPrompt("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                              "max_tokens": 8, "stream": True})


async def _run(mode: str, receipt_key: bytes = b""):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_miner(mode))) as client:
        return await stream_prompt(client, _wallet(), _instance(receipt_key), PROMPT, timeout=5)


async def test_benchmark_checks_the_receipt_under_the_attested_key():
    answer = await _run("receipt", RECEIPT_SIGNER.public_bytes)
    assert answer.text
    for mode in ("forged_receipt", "honest"):  # another key's receipt, or none at all
        with pytest.raises(EvaluationFailure) as info:
            await _run(mode, RECEIPT_SIGNER.public_bytes)
        assert info.value.reason == "bad_response" and "ReceiptError" in info.value.detail


async def test_honest_stand_in_stream_is_read():
    answer = await _run("ok")
    assert answer.text == "hihihi" and answer.completion_tokens == 3 and answer.ttft_s > 0


@pytest.mark.parametrize("mode,reason,needle", [
    ("http500", "bad_response", "HTTP 500"),
    ("tamper", "bad_response", "integrity"),
    ("reorder", "bad_response", "integrity"),
    ("truncate", "bad_response", "integrity"),
    ("overuse", "bad_response", "max_tokens"),
    ("badchunk", "bad_response", "OpenAI chunk"),
    ("nonstring", "bad_response", ""),
])
async def test_broken_streams_are_rejected(mode, reason, needle):
    with pytest.raises(EvaluationFailure) as info:
        await _run(mode)
    assert info.value.reason == reason and needle in info.value.detail


# --- attestation answers that never reach the verifier ------------------------------------

def _attest_app(answer: dict | bytes, status: int = 200):
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


GOOD = {"instance_id": KEY.instance_id, "chute_id": chute_id_for_model(MODEL), "model": MODEL,
        "hotkey": "x", "e2e_pubkey": KEY.public_b64, "tdx_quote": "AAAA",
        "receipt_pubkey": base64.b64encode(bytes(range(32))).decode()}


@pytest.mark.parametrize("answer,status,reason,needle", [
    (b"not json", 200, "bad_response", "not an AttestResponse"),
    ({**GOOD, "chute_id": "other"}, 200, "bad_response", "chute_id"),
    ({**GOOD, "e2e_pubkey": base64.b64encode(b"short").decode()}, 200, "bad_response",
     "ML-KEM"),
    ({**GOOD, "instance_id": "chosen-by-the-miner"}, 200, "bad_response", "not derived"),
    ({**GOOD, "instance_id": KeyPair.generate().instance_id}, 200, "bad_response",
     "instance_id is not derived from e2e_pubkey"),
    ({k: v for k, v in GOOD.items() if k != "receipt_pubkey"}, 200, "bad_response",
     "receipt_pubkey"),  # no attested receipt key: could never be billed
    ({**GOOD, "receipt_pubkey": base64.b64encode(bytes(31)).decode()}, 200, "bad_response",
     "receipt_pubkey"),
    ({**GOOD, "tdx_quote": "!!"}, 200, "attestation:malformed_evidence", "malformed"),
    ({**GOOD, "tdx_quote": base64.b64encode(b"\x04\x00" + bytes(60)).decode()}, 200,
     "attestation:tee_type_not_tdx", "not TDX"),
    (GOOD, 503, "bad_response", "HTTP 503"),
])
async def test_attest_answers_are_checked(answer, status, reason, needle):
    transport = httpx.ASGITransport(app=_attest_app(answer, status))
    async with httpx.AsyncClient(transport=transport) as c:
        attestor = Attestor(Verifier(Policy.development(), dangerous_accept_simulated_tee=True),
                            _wallet(), c, ttl=60, rechallenge_probability=0)
        neuron = Neuron(1, _hotkey(), "c", False, 0.0, "127.0.0.1:9")
        with pytest.raises(EvaluationFailure) as info:
            await attestor.ensure(neuron)
    assert info.value.reason == reason, info.value.detail
    assert needle in info.value.detail
    assert attestor.cached(1) is None


# --- the key cache, against a real miner app (in-process, no gate) -------------------------

async def test_attestation_cache_ttl_and_rechallenge():
    from chutes_subnet.attestation import SimulatedProvider
    from chutes_subnet.inference import make_backend
    from tests.validator_fixtures import MinerConfig, create_miner_app

    if create_miner_app is None:
        pytest.skip("chutes_subnet.miner missing")
    hotkey = _hotkey()
    app = create_miner_app(MinerConfig(tee="simulated"), hotkey_ss58=hotkey,
                           backend=make_backend("embedded"), provider=SimulatedProvider(),
                           gate=None)
    import time

    t0 = float(int(time.time()))
    now = [t0]
    verifier = Verifier(Policy.development(), dangerous_accept_simulated_tee=True)
    neuron = Neuron(1, hotkey, "c", False, 0.0, "127.0.0.1:9")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://m") as client:
        never = Attestor(verifier, _wallet(), client, ttl=60, rechallenge_probability=0.0,
                         clock=lambda: now[0])
        first, cached = await never.ensure(neuron)
        assert not cached and first.summary.ok and first.summary.simulated
        assert first.summary.expires_at == t0 + 60
        again, cached = await never.ensure(neuron)
        assert cached and again is first
        now[0] = t0 + 61                                  # TTL over: challenge again
        renewed, cached = await never.ensure(neuron)
        assert not cached and renewed.summary.verified_at == t0 + 61
        moved = Neuron(1, hotkey, "c", False, 0.0, "127.0.0.1:10")
        assert (await never.ensure(moved))[1] is False    # new endpoint: challenge again
        always = Attestor(verifier, _wallet(), client, ttl=60, rechallenge_probability=1.0,
                          clock=lambda: now[0])
        await always.ensure(neuron)
        assert (await always.ensure(neuron))[1] is False
        other = Neuron(1, "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "c", False, 0.0,
                       "127.0.0.1:9")
        with pytest.raises(EvaluationFailure) as info:  # a new hotkey at the uid: re-bound
            await never.ensure(other)
        assert info.value.reason == "attestation:binding_mismatch"
        assert never.cached(1) is None


@pytest.mark.parametrize("mode,expected", [("ok", None), ("random", "wrong_output")])
async def test_upstream_canary_must_repeat(mode, expected):
    from chutes_subnet.validator import run_benchmark

    cfg = BenchmarkConfig(prompts_per_miner=2, max_tokens=8, canary_repeats=2)
    prompts = miner_prompts(SEED, 1, "hk", cfg, embedded=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_miner(mode))) as client:
        outcome = await run_benchmark(client, _wallet(), _instance(), prompts, cfg, timeout=5,
                                      refs=None)
    assert outcome.reason == expected
    if expected is None:
        assert outcome.successes == 3 and outcome.verified == 2   # both canary answers
        assert outcome.tokens_per_s > 0 and outcome.ttft_s is not None


async def test_embedded_usage_cannot_exceed_the_answer_bytes():
    from chutes_subnet.validator import ReferenceCache, run_benchmark

    cfg = BenchmarkConfig(prompts_per_miner=1, max_tokens=8, verify_sample=0)
    prompts = [BenchPrompt(PROMPT.path, PROMPT.body, verify=False)]
    refs = ReferenceCache(seed=1)
    for mode, expected in (("ok", None), ("overclaim", "wrong_output")):
        transport = httpx.ASGITransport(app=_miner(mode))
        async with httpx.AsyncClient(transport=transport) as client:
            outcome = await run_benchmark(client, _wallet(), _instance(), prompts, cfg,
                                          timeout=5, refs=refs)
        assert outcome.reason == expected, mode


def _raw_app(payload: bytes):
    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": payload})

    return app


_EVENTS = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda d: format_event(d), st.dictionaries(
        st.sampled_from(["e2e", "e2e_final", "e2e_error", "usage", "x"]),
        st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.integers())),
        max_size=2)),
    st.just(b"data: [DONE]\n\n"), st.just(b"data: 5\n\n"))


@settings(max_examples=80, deadline=None)
@given(st.lists(_EVENTS, max_size=6))
async def test_arbitrary_miner_streams_fail_cleanly(events):
    transport = httpx.ASGITransport(app=_raw_app(b"".join(events)))
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(EvaluationFailure) as info:
            await stream_prompt(client, _wallet(), _instance(), PROMPT, timeout=5)
    assert info.value.reason == "bad_response"


@pytest.mark.parametrize("stop,expected", [(None, "wrong_output"), ("zz", None), (["a", "zz"], None)])
async def test_embedded_usage_bound_allows_the_cut_stop_sequence(stop, expected):
    """An honest answer cut at a stop sequence counts the stop's tokens (OpenAI semantics):
    8 tokens for the 6 bytes "hihihi" fits 6 + EOS + a 2-byte stop, not 6 + EOS."""
    from chutes_subnet.validator import ReferenceCache, run_benchmark

    cfg = BenchmarkConfig(prompts_per_miner=1, max_tokens=8, verify_sample=0)
    body = {**PROMPT.body, **({"stop": stop} if stop is not None else {})}
    prompts = [BenchPrompt(PROMPT.path, body, verify=False)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_miner("overclaim"))) as client:
        outcome = await run_benchmark(client, _wallet(), _instance(), prompts, cfg,
                                      timeout=5, refs=ReferenceCache(seed=1))
    assert outcome.reason == expected
