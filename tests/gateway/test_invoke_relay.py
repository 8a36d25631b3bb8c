"""The gateway's relay of a stream cut mid-event (property-based)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

_EVENTS = [b'data: {"e2e": "AAAA"}\n\n', b'data: {"e2e": "BBBBBBBB"}\n\n',
           b'data: {"e2e": "CC"}\n\n', b'data: {"e2e_final": "DDDD"}\n\n', b"data: [DONE]\n\n"]
_INTERRUPTED = b'data: {"e2e_error": "upstream interrupted"}\n\n'


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, sum(map(len, _EVENTS))), max_size=8),
       killed_at=st.integers(0, sum(map(len, _EVENTS))))
def test_interrupted_stream_relays_whole_events_then_the_gateway_error(cuts, killed_at):
    """A miner killed mid-event (at any byte, with any read boundaries) leaves the client
    whole events followed by the gateway's ``e2e_error``: never a half event glued to it,
    which a v2 client would reject as tampering instead of reporting the interruption."""
    from chutes_subnet.gateway.invoke_relay import _TailHold
    from chutes_subnet.sse import SSEParser

    body = b"".join(_EVENTS)[:killed_at]
    bounds = sorted({0, len(body), *(c for c in cuts if c < len(body))})
    hold, relayed = _TailHold(True), b""
    for a, b in itertools.pairwise(bounds):
        relayed += hold.push(body[a:b])
    hold.append(_INTERRUPTED)
    relayed += hold.rest()
    parser = SSEParser()
    events = [*parser.feed(relayed), *parser.close()]
    assert events[-1] == '{"e2e_error": "upstream interrupted"}'
    whole = [e for e in _EVENTS if body.find(e) >= 0 and body.find(e) + len(e) <= len(body)]
    assert relayed == b"".join(whole) + _INTERRUPTED
