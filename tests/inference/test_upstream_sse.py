"""The SSE decoder of the upstream backend (bytes may arrive split anywhere)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.inference.base import UpstreamError
from chutes_subnet.inference.upstream import SSEDecoder, SSEFormatError

_payload = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=40
)


def _feed_split(data: bytes, cuts: list[int], decoder: SSEDecoder | None = None) -> list[str]:
    decoder = decoder or SSEDecoder()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    events: list[str] = []
    for a, b in itertools.pairwise(points):
        events += decoder.feed(data[a:b])
    return events


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(_payload, min_size=1, max_size=3), max_size=8),
    st.sampled_from([b"\n", b"\r\n"]),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
)
def test_events_survive_any_split(events, newline, cuts):
    wire = bytearray(b": keep-alive comment" + newline + newline)
    for lines in events:
        wire += b"event: message" + newline
        for line in lines:
            wire += b"data: " + line.encode() + newline
        wire += b"id: 7" + newline + newline
    assert _feed_split(bytes(wire), cuts) == ["\n".join(lines) for lines in events]


def test_field_parsing_rules():
    decoder = SSEDecoder()
    wire = b"data:no-space\n\ndata:  two spaces\n\ndata\n\nretry: 10\n\ndata: [DONE]\n\n"
    assert decoder.feed(wire) == ["no-space", " two spaces", "", "[DONE]"]
    assert not decoder.pending
    assert decoder.feed(b"data: partial") == [] and decoder.pending


def test_over_long_line_is_rejected_even_without_newline():
    decoder = SSEDecoder(max_line_bytes=64)
    with pytest.raises(SSEFormatError, match="size limit"):
        decoder.feed(b"data: " + b"x" * 100)
    with pytest.raises(SSEFormatError):
        SSEDecoder(max_line_bytes=64).feed(b"data: " + b"y" * 100 + b"\n")


def test_over_large_multi_line_event_is_rejected():
    decoder = SSEDecoder(max_line_bytes=64)
    with pytest.raises(SSEFormatError):
        decoder.feed(b"data: " + b"z" * 40 + b"\n" + b"data: " + b"z" * 40 + b"\n")


def test_non_utf8_data_is_an_upstream_error():
    with pytest.raises(UpstreamError, match="UTF-8"):
        SSEDecoder().feed(b"data: \xff\xfe\n\n")
