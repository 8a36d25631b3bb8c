"""Parsers never raise anything but our own error types.

Hypothesis inputs per test: 5,000 (FAST) for TDX quotes and SPDM measurements; 1,000
(SOME) for GPU entries, workload manifests and event logs; 250 (FEW) for manifest objects,
the workload step and NVIDIA RIMs. The deep campaigns (100,000 inputs per target) are
``python -m fuzz.run`` (docs/security.md).
"""

from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chutes_subnet.attestation.verify.eventlog import EventLogError, parse_event_log, replay
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.gpu import parse_gpu_entry
from chutes_subnet.attestation.verify.manifest import (
    ManifestError,
    WorkloadManifest,
    parse_manifest,
)
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.rim import RimFormatError, parse_rim
from chutes_subnet.attestation.verify.spdm import parse_spdm_measurements
from chutes_subnet.attestation.verify.workload_check import StaticManifestSource, check_workload
from chutes_subnet.errors import AttestationError, GpuEvidenceFormatError, QuoteFormatError
from fuzz.seeds import event_logs, workload_manifest
from fuzz.strategies import mutated
from tests.vector_files import VECTORS_DIR as VECTORS

QUOTE = (VECTORS / "tdx" / "tdx_v4_quote.bin").read_bytes()
QUOTE5 = (VECTORS / "tdx" / "tdx_v5_outdated_quote.bin").read_bytes()
GPU = json.loads((VECTORS / "gpu" / "h100x8_evidence.json").read_text())[0]
SPDM = base64.b64decode(GPU["evidence"])
#: sized so the whole file adds seconds, not minutes (the fuzz/ runner goes deeper);
#: the FAST tests take several seconds each and are marked slow
FAST = settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
SOME = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
FEW = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))




def _parse_quote(raw: bytes) -> None:
    try:
        parse_quote(raw)
    except QuoteFormatError:
        pass


@FAST
@given(st.binary(max_size=6000))
@pytest.mark.slow
def test_quote_random_bytes(raw):
    _parse_quote(raw)


@FAST
@given(st.one_of(mutated(QUOTE), mutated(QUOTE5)))
@pytest.mark.slow
def test_quote_mutations(raw):
    _parse_quote(raw)


@FAST
@given(st.one_of(st.binary(max_size=5000), mutated(SPDM)))
@pytest.mark.slow
def test_spdm_random_and_mutated(raw):
    try:
        parse_spdm_measurements(raw)
    except GpuEvidenceFormatError:
        pass


@SOME
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


# --- workload identity: manifest, RTMR3 event log, NVIDIA RIM -------------------------

MANIFEST = workload_manifest()
LOGS = event_logs()
RIM = (VECTORS / "gpu" / "rim" / "1010_0200_882_96005E0001_PROD.swidtag").read_bytes()
_JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20)),
                     lambda inner: st.one_of(st.lists(inner, max_size=5),
                                             st.dictionaries(st.text(max_size=12), inner,
                                                             max_size=5)),
                     max_leaves=20)


@SOME
@given(st.one_of(st.binary(max_size=800), mutated(MANIFEST.canonical_bytes())))
def test_manifest_random_and_mutated(raw):
    try:
        m = parse_manifest(raw)
    except ManifestError:
        return
    assert parse_manifest(m.canonical_bytes()) == m  # canonical form is a fixed point


@FEW
@given(st.one_of(_JSON, st.fixed_dictionaries(
    {k: _JSON for k in MANIFEST.to_dict()}), st.builds(
        lambda k, v: {**MANIFEST.to_dict(), k: v}, st.sampled_from(sorted(MANIFEST.to_dict())),
        _JSON)))
def test_manifest_objects(obj):
    try:
        WorkloadManifest.from_dict(obj)
    except ManifestError:
        pass


@SOME
@given(st.one_of(*(mutated(log) for log in LOGS)))
def test_event_log_mutations_through_the_workload_step(raw):
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return
    try:
        events = parse_event_log(data)
    except EventLogError:
        return
    out = check_workload(data, MANIFEST.to_dict(), replay(events), MANIFEST.chute_id,
                         StaticManifestSource([MANIFEST]))
    assert (out.reason is None) == (out.manifest is not None)


@FEW
@given(_JSON, st.binary(min_size=48, max_size=48))
def test_workload_step_never_raises(log, rtmr3):
    out = check_workload(log, log, rtmr3, "c", StaticManifestSource([MANIFEST]))
    assert out.reason is not None


@FEW
@given(st.one_of(st.binary(max_size=2000), mutated(RIM)))
def test_rim_random_and_mutated(raw):
    try:
        parse_rim(raw)
    except RimFormatError:
        pass


def test_the_promised_input_counts_are_the_settings():
    """Each "N (NAME)" in the module docstring is what hypothesis runs for NAME."""
    promised = re.findall(r"([\d,]+)\s+\((FAST|SOME|FEW)\)", __doc__ or "")
    assert {name for _, name in promised} == {"FAST", "SOME", "FEW"}
    for count, name in promised:
        assert globals()[name].max_examples == int(count.replace(",", "")), name
