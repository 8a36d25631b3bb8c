"""Targets: TDX quote, SPDM GPU evidence, GPU entry JSON, evidence wire form, workload
manifest, RTMR3 event log (+ the workload step), NVIDIA RIM, verifier."""

from __future__ import annotations

import base64
import json
import logging

from chutes_subnet.attestation.verify.eventlog import EventLogError, parse_event_log, replay
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.gpu import parse_gpu_entry
from chutes_subnet.attestation.verify.manifest import ManifestError, parse_manifest
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.reasons import Verdict
from chutes_subnet.attestation.verify.rim import RimFormatError, parse_rim
from chutes_subnet.attestation.verify.spdm import parse_spdm_measurements
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.attestation.verify.workload_check import StaticManifestSource, check_workload
from chutes_subnet.errors import AttestationError, GpuEvidenceFormatError, QuoteFormatError

from .. import seeds
from .._bytes import Cursor, json_or_none
from ._base import Crash, Target

__all__ = ["TARGETS"]


def _quote(data: bytes) -> None:
    parse_quote(data)


def _quote_seeds() -> list[bytes]:
    return [base64.b64decode(seeds.simulated_evidence()["tdx_quote"])] + seeds.vector_files("quote")


def _spdm(data: bytes) -> None:
    parse_spdm_measurements(data)


def _gpu_entry(data: bytes) -> None:
    entry = json_or_none(data)
    if entry is not None:
        parse_gpu_entry(entry)


def _gpu_entry_seeds() -> list[bytes]:
    sim = seeds.simulated_evidence()["gpu_evidence"][0]
    return [json.dumps(sim).encode()] + seeds.vector_files("gpu")


def _evidence(data: bytes) -> None:
    wire = json_or_none(data)
    if wire is None:
        return
    ev = Evidence.from_wire(wire)
    parse_quote(ev.tdx_quote)
    for entry in ev.gpu_evidence:
        parse_gpu_entry(entry)


def _evidence_seeds() -> list[bytes]:
    return [json.dumps(seeds.simulated_evidence()).encode()]


class _ErrorLogged(logging.Handler):
    """Counts ERROR records: the verifier turns internal crashes into logged errors."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


_verifier: Verifier | None = None
_errors = _ErrorLogged()


def _verify(data: bytes) -> None:
    """Mutated quote bytes (first byte 0) or mutated wire JSON (else) into the verifier.

    Oracle: ``verify`` returns a Verdict, never raises, and never hides an internal
    exception behind its catch-all (that path logs at ERROR, which counts as a crash).
    """
    global _verifier
    if _verifier is None:
        _verifier = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True)
        logging.getLogger("chutes_subnet.attestation").addHandler(_errors)
    cur = Cursor(data)
    wire = dict(seeds.simulated_evidence())
    if cur.choice(2) == 0:
        wire["tdx_quote"] = base64.b64encode(cur.rest()).decode()
    else:
        mutated = json_or_none(cur.rest())
        if mutated is None:
            return
        wire = mutated
    try:
        evidence = Evidence.from_wire(wire)
    except AttestationError:
        return
    before = _errors.count
    verdict = _verifier.verify(evidence, nonce=seeds.ATTEST_NONCE,
                               e2e_pubkey=seeds.instance_key().public_bytes,
                               hotkey_ss58=seeds.HOTKEY, now=1_900_000_000)
    if not isinstance(verdict, Verdict):
        raise Crash("verify returned a non-Verdict")
    if _errors.count != before:
        raise Crash("verifier caught an unexpected internal exception")


def _verify_seeds() -> list[bytes]:
    ev = seeds.simulated_evidence()
    return [b"\x00" + base64.b64decode(ev["tdx_quote"]), b"\x01" + json.dumps(ev).encode()]


def _manifest(data: bytes) -> None:
    manifest = parse_manifest(data)
    if parse_manifest(manifest.canonical_bytes()) != manifest:
        raise Crash("canonical bytes do not parse back to the same manifest")


def _manifest_seeds() -> list[bytes]:
    return [seeds.workload_manifest().canonical_bytes()]


def _event_log(data: bytes) -> None:
    """Parse, then run the whole workload step against the log's own replay: it must
    return a reason or the manifest, never raise."""
    log = json_or_none(data)
    if log is None:
        return
    events = parse_event_log(log)
    manifest = seeds.workload_manifest()
    check_workload(log, manifest.to_dict(), replay(events), manifest.chute_id,
                   StaticManifestSource([manifest]))


def _rim(data: bytes) -> None:
    parse_rim(data)


TARGETS = [
    Target("tdx_quote", "attestation.quote.parse_quote", _quote, (QuoteFormatError,),
           _quote_seeds),
    Target("gpu_spdm", "attestation.spdm.parse_spdm_measurements", _spdm,
           (GpuEvidenceFormatError,), seeds.spdm_blobs),
    Target("gpu_entry", "attestation.gpu.parse_gpu_entry (JSON entry)", _gpu_entry,
           (GpuEvidenceFormatError,), _gpu_entry_seeds),
    Target("evidence_wire", "Evidence.from_wire + quote + GPU entries", _evidence,
           (AttestationError,), _evidence_seeds),
    Target("workload_manifest", "attestation.manifest.parse_manifest", _manifest,
           (ManifestError,), _manifest_seeds),
    Target("event_log", "attestation.eventlog.parse_event_log + workload check", _event_log,
           (EventLogError,), seeds.event_logs),
    Target("nvidia_rim", "attestation.rim.parse_rim", _rim, (RimFormatError,), seeds.rim_files),
    Target("verifier", "Verifier.verify (simulated dev mode) on mutated evidence", _verify,
           (), _verify_seeds),
]
