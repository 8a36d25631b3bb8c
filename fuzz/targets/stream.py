"""Targets: SSE parser, v1/v2 stream openers and the client's stream decoder.

The v2 stream target drives a :class:`~chutes_subnet.e2ee.v2.StreamOpener` with a
sequence of operations chosen by the input — deliver the next genuine frame, an
earlier frame again, a forged frame, the final frame, end of input — and checks the
integrity oracle: every frame the opener accepts is exactly the next genuine chunk,
and a stream is reported complete only after every chunk and the final frame.
"""

from __future__ import annotations

import base64

from chutes_subnet.e2ee import v1
from chutes_subnet.errors import E2EEError
from chutes_subnet.sse import SSEParser, format_event
from chutes_subnet.wire.call import StreamDecoder

from .. import seeds
from .._bytes import Cursor
from ._base import Crash, Target

__all__ = ["TARGETS"]


def _sse(data: bytes) -> None:
    """Chunking invariance: the same bytes give the same events however they are cut."""
    cur = Cursor(data)
    max_line = 64 + cur.byte() * 16
    pieces = cur.pieces()
    whole = b"".join(pieces)
    outcomes = []
    for feed in ([whole], pieces):
        parser = SSEParser(max_line=max_line)
        try:
            events = [e for chunk in feed for e in parser.feed(chunk)] + parser.close()
            outcomes.append(events)
        except E2EEError:
            outcomes.append(None)
    if outcomes[0] != outcomes[1]:
        raise Crash("SSE parser output depends on chunk boundaries")


def _sse_seeds() -> list[bytes]:
    text = b"data: a\r\n\r\n: comment\ndata: b\ndata: c\n\nevent: x\ndata:[DONE]\r\r"
    return [b"\x03\x02\x10\x20" + text, b"\x00\x00" + format_event({"e2e": "QUJD"})]


def _v1_stream(data: bytes) -> None:
    """Client v1 opener: ``e2e_init`` then lines (genuine init when the mode byte is odd)."""
    _, rkey, _ = seeds.v1_exchange()
    cur = Cursor(data)
    opener = v1.StreamOpener(rkey)
    lines = cur.rest().decode("latin-1").split("\n")
    if cur.data[:1] and cur.data[0] & 1:
        sealer = v1.StreamSealer(rkey.public_bytes)
        opener.open_init(sealer.init_event()["e2e_init"])
    else:
        opener.open_init(lines.pop(0))
    for line in lines[:32]:
        opener.open_line(line)


def _v1_stream_seeds() -> list[bytes]:
    _, rkey, _ = seeds.v1_exchange()
    sealer = v1.StreamSealer(rkey.public_bytes)
    init = sealer.init_event()["e2e_init"]
    return [b"\x00" + "\n".join([init, sealer.seal_line("data: {}")["e2e"]]).encode(),
            b"\x01" + sealer.seal_line("data: {}")["e2e"].encode()]


def _v2_stream(data: bytes) -> None:
    _, client, server, _ = seeds.v2_exchange()
    sealer = server.stream_sealer()
    chunks = [b"chunk-%d" % i for i in range(6)]
    frames = [sealer.seal(c) for c in chunks]
    final = sealer.finish({"prompt_tokens": 1, "completion_tokens": 6})
    opener = client.stream_opener()
    cur = Cursor(data)
    delivered = 0
    for _ in range(1 + cur.choice(12)):
        op = cur.choice(6)
        if op == 0 and delivered >= len(frames):
            continue
        if op == 0:
            got = opener.open(frames[delivered])
            if got != chunks[delivered]:
                raise Crash("v2 stream returned the wrong plaintext")
            delivered += 1
        elif op == 1:  # an earlier or later genuine frame out of place
            frame = frames[cur.choice(len(frames))]
            got = opener.open(frame)
            if delivered >= len(chunks) or got != chunks[delivered]:
                raise Crash("v2 stream accepted an out-of-order frame")
            delivered += 1
        elif op == 2:
            opener.open(base64.b64encode(cur.take(cur.byte())).decode())
            raise Crash("v2 stream accepted a forged frame")
        elif op == 3:
            opener.open_final(final)
            if delivered != len(frames):
                raise Crash("v2 final frame accepted before every chunk")
        elif op == 4:
            opener.open_final(cur.take(cur.byte()).decode("latin-1"))
            raise Crash("v2 stream accepted a forged final frame")
        else:
            opener.close()
            if delivered != len(frames):
                raise Crash("v2 stream closed cleanly without every chunk")


def _v2_stream_seeds() -> list[bytes]:
    return [bytes([11, 0, 0, 0, 0, 0, 0, 3, 5]), bytes([3, 1, 2, 0, 5]),
            bytes([2, 2, 10]) + bytes(10)]


def _client_decoder(data: bytes) -> None:
    """The client's full stream path: SSE framing, JSON events, v1 or v2 decryption."""
    cur = Cursor(data)
    version = 1 + cur.choice(2)
    session = seeds.v1_exchange()[1] if version == 1 else seeds.v2_exchange()[1]
    decoder = StreamDecoder(version, session)
    for piece in cur.pieces():
        decoder.feed(piece)
    decoder.finish()


def _client_decoder_seeds() -> list[bytes]:
    _, _, server, _ = seeds.v2_exchange()
    sealer = server.stream_sealer()
    body = (format_event({"e2e": sealer.seal(b'data: {"x":1}')})
            + format_event({"e2e_final": sealer.finish(None)}) + b"data: [DONE]\n\n")
    _, rkey, _ = seeds.v1_exchange()
    s1 = v1.StreamSealer(rkey.public_bytes)
    body1 = format_event(s1.init_event()) + format_event(s1.seal_line("data: {}"))
    return [b"\x01\x00" + body, b"\x00\x02\x40" + body1 + b'data: {"usage":{}}\n\n']


TARGETS = [
    Target("sse_parser", "sse.SSEParser (chunking-invariance oracle)", _sse, (E2EEError,),
           _sse_seeds),
    Target("e2ee_v1_stream", "e2ee.v1.StreamOpener", _v1_stream, (E2EEError,), _v1_stream_seeds),
    Target("e2ee_v2_stream", "e2ee.v2.StreamOpener (integrity oracle)", _v2_stream,
           (E2EEError,), _v2_stream_seeds),
    Target("client_stream", "wire.call.StreamDecoder (SSE + v1/v2)", _client_decoder,
           (E2EEError,), _client_decoder_seeds),
]
