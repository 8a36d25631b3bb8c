"""Parsers never raise anything but our own error types (>= 10,000 inputs each)."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chutes_subnet.attestation import Evidence
from chutes_subnet.attestation.gpu import parse_gpu_entry
from chutes_subnet.attestation.quote import parse_quote
from chutes_subnet.attestation.spdm import parse_spdm_measurements
from chutes_subnet.errors import AttestationError, GpuEvidenceFormatError, QuoteFormatError
from fuzz.strategies import mutated
from tests.vector_files import VECTORS_DIR as VECTORS

QUOTE = (VECTORS / "tdx" / "tdx_v4_quote.bin").read_bytes()
QUOTE5 = (VECTORS / "tdx" / "tdx_v5_outdated_quote.bin").read_bytes()
GPU = json.loads((VECTORS / "gpu" / "h100x8_evidence.json").read_text())[0]
SPDM = base64.b64decode(GPU["evidence"])
FAST = settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))




def _parse_quote(raw: bytes) -> None:
    try:
        parse_quote(raw)
    except QuoteFormatError:
        pass


@FAST
@given(st.binary(max_size=6000))
def test_quote_random_bytes(raw):
    _parse_quote(raw)


@FAST
@given(st.one_of(mutated(QUOTE), mutated(QUOTE5)))
def test_quote_mutations(raw):
    _parse_quote(raw)


@FAST
@given(st.one_of(st.binary(max_size=5000), mutated(SPDM)))
def test_spdm_random_and_mutated(raw):
    try:
        parse_spdm_measurements(raw)
    except GpuEvidenceFormatError:
        pass


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(["arch", "certificate", "evidence", "nonce", "x"]),
                       st.one_of(st.text(max_size=80), st.integers(), st.none(), st.binary(max_size=8))))
def test_gpu_entry_and_wire_garbage(d):
    for fn in (parse_gpu_entry, Evidence.from_wire):
        try:
            fn(d)
        except AttestationError:
            pass


def test_wire_round_trip():
    ev = Evidence(QUOTE, [GPU], simulated=False)
    assert Evidence.from_wire(json.loads(json.dumps(ev.to_wire()))) == ev
