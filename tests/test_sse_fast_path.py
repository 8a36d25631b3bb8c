"""The SSE parser's whole-event fast path (one call per streamed token) returns exactly
what line-by-line parsing returns, for any bytes in any chunking, and keeps its limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.errors import EnvelopeFormatError
from chutes_subnet.sse import SSEParser


class _LineByLine(SSEParser):
    """The reference: the fast path switched off."""

    __slots__ = ()

    def _whole_events(self, chunk: bytes) -> list[str] | None:
        return None


def _run(parser: SSEParser, chunks: list[bytes]) -> list[str] | str:
    out: list[str] = []
    try:
        for chunk in chunks:
            out += parser.feed(chunk)
        return out + parser.close()
    except EnvelopeFormatError as exc:
        return f"error: {exc}"


_PIECES = st.sampled_from([b"data: ", b"data:", b"data: x", b"\n", b"\n\n", b"\r", b"\r\n",
                           b": c\n", b"event: e\n", b'{"e2e":"QUJD"}', b"\xc3\xa9", b"\xff",
                           b"[DONE]", b"id: 1\n"])


@settings(max_examples=400)
@given(st.lists(st.lists(_PIECES, max_size=8).map(b"".join), max_size=6))
def test_fast_path_equals_line_by_line(chunks: list[bytes]) -> None:
    assert _run(SSEParser(max_line=64), chunks) == _run(_LineByLine(max_line=64), chunks)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                               blacklist_categories=("Cs",)), max_size=40),
                min_size=1, max_size=5))
def test_whole_events_take_the_fast_path(payloads: list[str]) -> None:
    chunk = b"".join(b"data: " + p.encode() + b"\n\n" for p in payloads)
    parser = SSEParser()
    assert parser._whole_events(chunk) == payloads
    assert parser.feed(chunk) == payloads


def test_fast_path_keeps_the_size_and_utf8_limits() -> None:
    with pytest.raises(EnvelopeFormatError, match="size limit"):
        SSEParser(max_line=16).feed(b"data: " + b"x" * 32 + b"\n\n")
    with pytest.raises(EnvelopeFormatError, match="UTF-8"):
        SSEParser().feed(b"data: \xff\n\n")
