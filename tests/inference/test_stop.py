"""``stop`` and ``n`` on the embedded backend: OpenAI semantics in the one shared decoding
path, so the backend (stream and non-stream) and the validator's reference agree."""

from __future__ import annotations

from typing import Any

import pytest

from chutes_subnet.inference import (
    DEFAULT_SEED,
    InvalidRequestError,
    make_backend,
    reference_completion,
    run_generation,
)
from chutes_subnet.inference.requests import N_UNSUPPORTED

TEXT = "/v1/completions"
BODY: dict[str, Any] = {"prompt": "hello there", "max_tokens": 40}
FULL = reference_completion(TEXT, BODY, seed=DEFAULT_SEED)  # no stop: 40 tokens


@pytest.fixture
async def backend():
    b = make_backend("embedded", seed=DEFAULT_SEED, device="cpu")
    try:
        yield b
    finally:
        await b.aclose()


def _cases() -> list[tuple[Any, int]]:
    """(stop, where the answer must be cut), derived from the unstopped answer."""
    mid = FULL[10:13]  # a three-token stop (one byte per token): spans several steps
    late = FULL[30:32]
    return [(mid, FULL.find(mid)), ([late, mid], min(FULL.find(mid), FULL.find(late))),
            ([late], FULL.find(late)), (FULL[0], 0)]


def test_the_answer_is_long_enough_to_cut() -> None:
    assert len(FULL) == 40 and "\ufffd" not in FULL


@pytest.mark.parametrize("stop,cut", _cases())
def test_reference_stops_before_the_earliest_stop_sequence(stop: Any, cut: int) -> None:
    result = run_generation(TEXT, {**BODY, "stop": stop}, seed=DEFAULT_SEED)
    assert result.text == FULL[:cut] and result.finish_reason == "stop"
    stops = [stop] if isinstance(stop, str) else stop
    assert all(s not in result.text for s in stops)
    longest = max(len(s) for s in stops)
    assert cut + 1 <= result.completion_tokens <= cut + longest  # tokens decoded, not text


@pytest.mark.parametrize("stop,cut", _cases())
async def test_backend_stream_and_complete_agree_and_never_leak_a_partial_stop(
        backend, stop: Any, cut: int) -> None:
    body = {**BODY, "stop": stop}
    expected = reference_completion(TEXT, body, seed=DEFAULT_SEED)
    resp = await backend.complete(TEXT, body)
    assert resp["choices"][0]["text"] == expected == FULL[:cut]
    assert resp["choices"][0]["finish_reason"] == "stop"
    seen = ""
    finish = []
    async for chunk in backend.stream(TEXT, {**body, "stream": True}):
        if not chunk["choices"]:
            assert chunk["usage"]["completion_tokens"] == resp["usage"]["completion_tokens"]
            continue
        seen += chunk["choices"][0]["text"]
        assert expected.startswith(seen)  # a held-back partial stop never went out
        finish.append(chunk["choices"][0]["finish_reason"])
    assert seen == expected and finish[-1] == "stop" and set(finish[:-1]) <= {None}


@pytest.mark.parametrize("stop", [None, [], "\x00never", ["\x00a", "\x00b"]])
def test_absent_or_unmatched_stop_changes_nothing(stop: Any) -> None:
    body = {**BODY, "stop": stop} if stop != [] else BODY
    result = run_generation(TEXT, body, seed=DEFAULT_SEED)
    assert result.text == FULL and result.finish_reason == "length"


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], [], "", [""], [1], 7, "x" * 257])
def test_bad_stop_is_refused_naming_the_field(stop: Any) -> None:
    with pytest.raises(InvalidRequestError) as err:
        run_generation(TEXT, {**BODY, "stop": stop}, seed=DEFAULT_SEED)
    assert err.value.args[0].startswith("invalid request: stop")


@pytest.mark.parametrize("n", [2, 0, -1, 16, True, "2"])
def test_n_other_than_one_is_one_clear_public_400(n: Any) -> None:
    with pytest.raises(InvalidRequestError) as err:
        run_generation(TEXT, {**BODY, "n": n}, seed=DEFAULT_SEED)
    assert str(err.value) == N_UNSUPPORTED == err.value.public
    assert str(err.value).startswith("n: only n=1")


@pytest.mark.parametrize("n", [1, None])
def test_n_one_or_null_is_accepted(n: Any) -> None:
    assert run_generation(TEXT, {**BODY, "n": n}, seed=DEFAULT_SEED).text == FULL
