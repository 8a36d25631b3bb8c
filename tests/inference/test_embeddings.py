"""``/v1/embeddings`` on the embedded model: deterministic, unit-length float32 vectors
that a validator can recompute; every bad body refused with a field-level error."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.inference import DEFAULT_SEED, EmbeddedBackend, InvalidRequestError
from chutes_subnet.inference.embeddings import (
    MAX_INPUTS,
    MAX_TOTAL_TOKENS,
    parse_embedding_request,
    reference_embeddings,
)
from chutes_subnet.inference.model import DEFAULT_CONFIG

EMBED = "/v1/embeddings"


@pytest.fixture(scope="module")
def backend():
    b = EmbeddedBackend()
    yield b


async def test_vectors_are_deterministic_unit_float32_and_recomputable(backend) -> None:
    body = {"input": ["secret prompt one", "secret prompt two", "secret prompt one"]}
    out = await backend.complete(EMBED, body)
    assert out["object"] == "list" and out["model"] == backend.model_id
    vecs = [d["embedding"] for d in out["data"]]
    assert [d["index"] for d in out["data"]] == [0, 1, 2]
    assert all(len(v) == DEFAULT_CONFIG.d_model for v in vecs)
    assert vecs[0] == vecs[2] and vecs[0] != vecs[1]
    for v in vecs:
        assert abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-5
        assert all(struct.unpack("<f", struct.pack("<f", x))[0] == x for x in v)  # float32
    tokens = sum(len(t.encode()) + 1 for t in body["input"])
    assert out["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    ref = reference_embeddings(body, seed=DEFAULT_SEED, model_id=backend.model_id)
    assert ref == out


async def test_base64_and_dimensions(backend) -> None:
    full = (await backend.complete(EMBED, {"input": "abc"}))["data"][0]["embedding"]
    packed = (await backend.complete(EMBED, {"input": "abc", "encoding_format": "base64"}))
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == full
    short = (await backend.complete(EMBED, {"input": "abc", "dimensions": 8}))["data"][0]
    assert len(short["embedding"]) == 8
    norm = math.sqrt(sum(x * x for x in full[:8]))
    assert short["embedding"] == pytest.approx([x / norm for x in full[:8]], rel=1e-5)


@pytest.mark.parametrize("body,field", [
    ({}, "input"),
    ({"input": ""}, "input"),
    ({"input": []}, "input"),
    ({"input": [1, 2, 3]}, "input"),                      # token ids: bytes are the tokens
    ({"input": ["ok", ""]}, "input"),
    ({"input": ["x"] * (MAX_INPUTS + 1)}, "input"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": DEFAULT_CONFIG.d_model + 1}, "dimensions"),
    ({"input": "x", "dimensions": "8"}, "dimensions"),
    ({"input": ["y" * 8000] * 5}, "input"),               # over MAX_TOTAL_TOKENS in all
    ({"input": "z" * DEFAULT_CONFIG.max_context}, "input"),  # one text over the context
])
def test_bad_bodies_are_refused_without_echoing_them(body: dict, field: str) -> None:
    assert 5 * 8001 > MAX_TOTAL_TOKENS
    with pytest.raises(InvalidRequestError) as exc:
        parse_embedding_request(body)
    message = str(exc.value)
    assert field in message and "\n" not in message
    assert "yyyy" not in message and "zzzz" not in message and "int8" not in message


async def test_backend_refuses_bad_bodies_and_streams(backend) -> None:
    with pytest.raises(InvalidRequestError, match="JSON object"):
        await backend.complete(EMBED, ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="unsupported path"):
        backend.stream(EMBED, {"input": "x"})


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                           max_size=4),
                     max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["input", "encoding_format", "dimensions", "model", "x"]),
                       _json, max_size=5))
def test_parser_accepts_or_refuses_cleanly(body: dict) -> None:
    try:
        req = parse_embedding_request(body)
    except InvalidRequestError:
        return
    assert 1 <= len(req.input) <= MAX_INPUTS and all(req.input)
