"""StreamDecoder's shortcut for ``{"e2e":"<b64>"}`` frames reads exactly what JSON reads:
escaped or oddly spaced frames take the JSON path and open the same, and anything JSON
would refuse still fails the stream."""

from __future__ import annotations

import json

import pytest

from chutes_subnet.e2ee import PADDING_PADME, KeyPair, RequestContext, v2
from chutes_subnet.errors import StreamIntegrityError
from chutes_subnet.wire.call import StreamDecoder

KP = KeyPair.generate()
LINE = b'data: {"choices":[{"delta":{"content":"hi"}}]}'


def _session_and_frames(n: int) -> tuple[v2.ClientSession, list[str], str]:
    ctx = RequestContext("c", "i", "n" * 32, "/v1/chat/completions", True, PADDING_PADME)
    blob, client = v2.seal_request(KP.public_bytes, ctx, {"x": 1})
    _, server = v2.open_request(KP, ctx, blob)
    sealer = server.stream_sealer()
    frames = [sealer.seal(LINE) for _ in range(n)]
    return client, frames, sealer.finish({"completion_tokens": n})


def _event(data: str) -> bytes:
    return b"data: " + data.encode() + b"\n\n"


def _escaped(frame: str) -> str:
    """The same JSON string with every character as a \\u escape."""
    return "".join(f"\\u{ord(c):04x}" for c in frame)


@pytest.mark.parametrize("shape", [
    lambda f: json.dumps({"e2e": f}, separators=(",", ":")),   # the shortcut
    lambda f: json.dumps({"e2e": f}),                          # spaces: JSON path
    lambda f: '{"e2e":"' + _escaped(f) + '"}',                 # escapes: JSON path
])
def test_every_json_spelling_of_a_frame_opens_the_same(shape) -> None:
    client, frames, final = _session_and_frames(3)
    dec = StreamDecoder(2, client)
    out = b"".join(dec.feed(_event(shape(f))) for f in frames)
    out += dec.feed(_event(json.dumps({"e2e_final": final}))) + dec.feed(b"data: [DONE]\n\n")
    assert out == (LINE + b"\n\n") * 3 + b"data: [DONE]\n\n"
    assert dec.final_usage == {"completion_tokens": 3}


@pytest.mark.parametrize("bad", [
    lambda f: '{"e2e":"' + f[:10] + "\t" + f[10:] + '"}',      # raw control char
    lambda f: '{"e2e":"' + f[:-4] + '"}',                      # truncated base64
    lambda f: '{"e2e":"' + f + '"}x',                          # trailing garbage
    lambda f: '{"e2e":"' + f.swapcase() + '"}',                # other bytes
])
def test_malformed_frames_fail_the_stream(bad) -> None:
    client, frames, _final = _session_and_frames(1)
    dec = StreamDecoder(2, client)
    with pytest.raises(StreamIntegrityError):
        dec.feed(_event(bad(frames[0])))
