"""Validation of OpenAI request bodies (what the miner maps to HTTP 400)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.errors import InferenceError
from chutes_subnet.inference.base import InvalidRequestError
from chutes_subnet.inference.generation import prepare
from chutes_subnet.inference.model import ModelConfig
from chutes_subnet.inference.requests import (
    DEFAULT_MAX_TOKENS,
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
)

CHAT, TEXT = "/v1/chat/completions", "/v1/completions"
MSG = [{"role": "user", "content": "hello"}]


def test_chat_defaults_and_ignored_fields():
    req = parse_request(CHAT, {"model": "x", "messages": MSG, "temperature": 1.7, "seed": 9,
                               "top_p": 0.1, "tools": [], "whatever": {"a": 1}})
    assert isinstance(req, ChatCompletionRequest)
    assert req.max_tokens == DEFAULT_MAX_TOKENS == 256
    assert req.messages[0].content == "hello"


def test_completion_prompt_forms():
    assert isinstance(parse_request(TEXT, {"prompt": "abc"}), CompletionRequest)
    assert parse_request(TEXT, {"prompt": ["abc"], "max_tokens": 3}).prompt == "abc"
    with pytest.raises(InvalidRequestError, match="prompt"):
        parse_request(TEXT, {"prompt": ["a", "b"]})


def test_text_parts_and_max_completion_tokens_alias():
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                      {"type": "text", "text": "b"}]}],
            "max_completion_tokens": 9}
    req = parse_request(CHAT, body)
    assert (req.messages[0].content, req.max_tokens) == ("ab", 9)
    assert parse_request(CHAT, {**body, "max_tokens": None}).max_tokens == 9
    assert parse_request(CHAT, {"messages": MSG, "max_tokens": None}).max_tokens == 256


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (CHAT, {"messages": MSG, "max_tokens": 0}, "max_tokens"),
        (CHAT, {"messages": MSG, "max_tokens": 4097}, "max_tokens"),
        (CHAT, {"messages": MSG, "max_tokens": "12"}, "max_tokens"),
        (CHAT, {"messages": MSG, "max_tokens": True}, "max_tokens"),
        (CHAT, {"messages": MSG, "n": 2}, "n"),
        (CHAT, {"messages": []}, "messages"),
        (CHAT, {}, "messages"),
        (CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, "role"),
        (CHAT, {"messages": [{"role": "user", "content": 5}]}, "content"),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "content"),
        (CHAT, {"messages": [{"role": "user", "content": "x"}] * 257}, "messages"),
        (TEXT, {"prompt": 42}, "prompt"),
        (TEXT, {"messages": MSG}, "prompt"),
    ],
)
def test_invalid_bodies_name_the_field(path, body, field):
    with pytest.raises(InvalidRequestError, match=field) as info:
        parse_request(path, body)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InferenceError)


def test_error_message_never_echoes_plaintext():
    secret = "TOP-SECRET-PLAINTEXT"
    with pytest.raises(InvalidRequestError) as info:
        parse_request(
            CHAT, {"messages": [{"role": secret, "content": secret}], "max_tokens": secret}
        )
    assert secret not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_bad_path_and_non_object_body():
    for path in ("/v1/embeddings", "/v1/responses"):  # not generation paths
        with pytest.raises(InvalidRequestError, match="unsupported path"):
            parse_request(path, {"input": "x"})
    with pytest.raises(InvalidRequestError, match="JSON object"):
        parse_request(CHAT, ["not", "a", "dict"])


def test_prompt_plus_max_tokens_must_fit_context():
    small = ModelConfig(max_context=64)
    assert len(prepare(TEXT, {"prompt": "a" * 10, "max_tokens": 53}, small).prompt_ids) == 11
    with pytest.raises(InvalidRequestError, match="exceeds the model context of 64"):
        prepare(TEXT, {"prompt": "a" * 10, "max_tokens": 54}, small)


def test_prepare_applies_the_chat_template():
    prepared = prepare(CHAT, {"messages": MSG, "max_tokens": 5})
    assert prepared.kind == "chat" and prepared.max_tokens == 5
    assert bytes(prepared.prompt_ids[1:]) == b"<|user|>\nhello\n<|assistant|>\n"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_fields = st.sampled_from(["messages", "prompt", "max_tokens", "max_completion_tokens", "n",
                           "temperature", "role", "content", "stream", "model"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([CHAT, TEXT, "/x"]), st.dictionaries(_fields, _json, max_size=5) | _json)
def test_arbitrary_json_is_accepted_or_rejected_cleanly(path, body):
    try:
        req = parse_request(path, body)
    except InvalidRequestError:
        return
    assert 1 <= req.max_tokens <= 4096
