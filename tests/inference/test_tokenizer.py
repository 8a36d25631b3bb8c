"""Byte tokenizer, chat template and the streaming UTF-8 decoder."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.inference.tokenizer import (
    BOS_ID,
    EOS_ID,
    VOCAB_SIZE,
    Utf8StreamDecoder,
    encode_prompt,
    render_chat,
)


def test_vocabulary_layout():
    assert (BOS_ID, EOS_ID, VOCAB_SIZE) == (256, 257, 258)


def test_chat_template_is_the_documented_one():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "¿Qué?"},
    ]
    assert render_chat(messages) == (
        "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello\n"
        "<|user|>\n¿Qué?\n<|assistant|>\n"
    )


def test_encode_prompt_is_bos_plus_utf8_bytes():
    assert encode_prompt("aé") == [BOS_ID, 0x61, 0xC3, 0xA9]
    assert encode_prompt("") == [BOS_ID]


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=400), max_size=40))
def test_streamed_pieces_concatenate_to_one_shot_decode(data, cuts):
    decoder = Utf8StreamDecoder()
    out = [decoder.feed(piece) for piece in _pieces(data, cuts)]
    out.append(decoder.flush())
    assert "".join(out) == data.decode("utf-8", errors="replace")
    assert decoder.pending == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_byte_at_a_time_like_the_generator(data):
    decoder = Utf8StreamDecoder()
    text = "".join(decoder.feed(bytes((b,))) for b in data) + decoder.flush()
    assert text == data.decode("utf-8", errors="replace")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.lists(st.integers(min_value=0, max_value=400), max_size=40))
def test_valid_utf8_is_never_split_into_replacement_characters(text, cuts):
    data = text.encode("utf-8")
    decoder = Utf8StreamDecoder()
    pieces = [decoder.feed(piece) for piece in _pieces(data, cuts)]
    assert "".join(pieces) == text  # complete before flush: nothing held back at the end
    assert decoder.flush() == ""
    for piece in pieces:
        piece.encode("utf-8")  # no lone surrogates: each piece is whole characters


def test_incomplete_sequence_is_held_back_then_replaced_on_flush():
    decoder = Utf8StreamDecoder()
    snowman = "☃".encode()
    assert decoder.feed(snowman[:1]) == ""
    assert decoder.pending == 1
    assert decoder.feed(snowman[1:2]) == ""
    assert decoder.feed(snowman[2:]) == "☃"
    assert decoder.feed(b"\xf0\x9f") == ""
    assert decoder.flush() == "\ufffd"
    assert decoder.feed(b"\xffA") == "\ufffdA"
