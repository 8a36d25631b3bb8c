"""SSE parser: any split of the byte stream yields the same events; bounded lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.sse import SSEParser, format_event


def _parse(chunks):
    p = SSEParser()
    out = []
    for c in chunks:
        out += p.feed(c)
    return out + p.close()


def test_basic_events_and_line_endings():
    raw = b"data: a\n\n: comment\nevent: x\ndata: b\r\ndata: c\r\n\r\ndata:d\r\rdata: [DONE]\n\n"
    assert _parse([raw]) == ["a", "b\nc", "d", "[DONE]"]


def test_format_event_round_trip():
    import json

    events = _parse([format_event({"x": "é"}), format_event("[DONE]")])
    assert json.loads(events[0]) == {"x": "é"} and events[1] == "[DONE]"


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                                 max_size=50), max_size=8),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
       crlf=st.booleans())
def test_property_split_invariance(payloads, cuts, crlf):
    nl = b"\r\n" if crlf else b"\n"
    raw = b"".join(b"data: " + p.encode() + nl + nl for p in payloads)
    points = sorted({min(c, len(raw)) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(raw[last:p])
        last = p
    chunks.append(raw[last:])
    assert _parse(chunks) == payloads


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=500))
def test_property_garbage_only_raises_our_error(data):
    try:
        _parse([data])
    except EnvelopeFormatError:
        pass


def test_line_limit():
    p = SSEParser(max_line=100)
    with pytest.raises(EnvelopeFormatError):
        p.feed(b"data: " + b"x" * 200)
