"""v1 envelope behaviour (interop with the public client is in test_v1_interop.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.e2ee import KeyPair, v1
from chutes_subnet.errors import DecryptionError, E2EEError, EnvelopeFormatError

KP = KeyPair.generate()


@settings(max_examples=60, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=10), st.text(max_size=300), max_size=6))
def test_property_round_trip(payload):
    blob, key = v1.seal_request(KP.public_bytes, payload)
    got, rpk = v1.open_request(KP, blob)
    assert got == payload
    assert v1.open_response(key, v1.seal_response(rpk, {"r": payload})) == {"r": payload}


_BLOB, _KEY = v1.seal_request(KP.public_bytes, {"model": "m"})


@settings(max_examples=300, deadline=None)
@given(pos=st.integers(min_value=0, max_value=len(_BLOB) - 1), xor=st.integers(min_value=1, max_value=255))
def test_property_single_byte_mutation_rejected(pos, xor):
    mutated = bytearray(_BLOB)
    mutated[pos] ^= xor
    with pytest.raises(E2EEError):
        v1.open_request(KP, bytes(mutated))


def test_request_without_response_key_is_a_format_error():
    blob = v1._seal_blob(KP.public_bytes, v1.INFO_REQ, {"model": "m"})
    with pytest.raises(EnvelopeFormatError, match="e2e_response_pk"):
        v1.open_request(KP, blob)


def test_stream_chunk_before_init_and_tampered_chunk():
    _, key = v1.seal_request(KP.public_bytes, {})
    _, rpk = v1.open_request(KP, _)
    opener = v1.StreamOpener(key)
    sealer = v1.StreamSealer(rpk)
    chunk = sealer.seal_line("data: x")["e2e"]
    with pytest.raises(EnvelopeFormatError):
        opener.open_line(chunk)
    opener.open_init(sealer.init_event()["e2e_init"])
    assert opener.open_line(chunk) == "data: x"
    with pytest.raises(DecryptionError):
        opener.open_line(chunk[:-4] + ("AAAA" if not chunk.endswith("AAAA") else "BBBB"))
