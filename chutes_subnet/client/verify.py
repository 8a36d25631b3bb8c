"""The client's own check of one instance: pure (no I/O, no clock), never raises.

:func:`check_instance` takes what the gateway offered (instance id, E2EE key), the
32-byte nonce the client chose, the attestation answer the gateway relayed and the
verification time, and returns a frozen :class:`ClientVerdict`. Steps, in order
(1-2 stop at the first failure; 3 reports every violation):

1. answer    bounded JSON with the :class:`~chutes_subnet.wire.messages.AttestResponse`
             shape; the E2EE key is an ML-KEM-768 key; evidence is well-formed;
2. identity  the answer is for the instance asked about (``instance_id_mismatch``);
             the id is derived from the attested key, ``instance_id_for_key`` —
             so evidence of another instance cannot be relayed under this id
             (``instance_id_not_derived``); the attested key is the key the gateway
             listed, the one the client would encrypt to (``key_mismatch``); the
             chute id derives from the model and is the chute the client asked for
             (``chute_mismatch``: no cheaper model behind the requested name);
3. evidence  the validator's :class:`~chutes_subnet.attestation.verify.verifier.Verifier` with the
             client's policy: DCAP quote + TCB status + TD fields, GPU evidence for
             the same nonce, measurement profile, the workload manifest (RTMR3 event
             log replayed, manifest published for this chute), and report_data
             binding of this nonce, this key and the miner hotkey
             (``binding_mismatch``);
4. version   the instance serves E2EE v2 when the client requires it
             (``no_v2``; v1 only by explicit opt-in).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.quote import Measurements, parse_quote
from chutes_subnet.attestation.verify.reasons import Reason, Verdict
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.e2ee import decode_public_key
from chutes_subnet.errors import (
    AttestationError,
    E2EEError,
    InstanceVerificationError,
    QuoteFormatError,
)
from chutes_subnet.instance_id import instance_id_for_key
from chutes_subnet.receipts import decode_public_key as decode_receipt_key
from chutes_subnet.wire.messages import AttestResponse
from chutes_subnet.wire.protocol import (
    E2EE_VERSION_V2,
    MAX_ATTEST_RESPONSE_BYTES,
    chute_id_for_model,
    parse_json,
)

__all__ = ["ClientVerdict", "ParsedAnswer", "check_instance", "parse_answer"]


@dataclass(frozen=True)
class ParsedAnswer:
    """A well-formed attestation answer (step 1 passed)."""

    response: AttestResponse
    evidence: Evidence
    e2e_pubkey: bytes
    #: the Ed25519 receipt key the answer claims (bound by report_data layout v2)
    receipt_pubkey: bytes | None = None


@dataclass(frozen=True)
class ClientVerdict:
    """Outcome of :func:`check_instance`; ``ok`` iff ``reasons`` is empty."""

    instance_id: str
    reasons: tuple[Reason, ...]
    attestation: Verdict | None = None
    e2e_pubkey: bytes | None = None
    hotkey: str | None = None
    model: str | None = None
    e2e_versions: tuple[int, ...] = ()
    quote_sha256: str | None = None
    measurements: Measurements | None = None
    #: "model@revision on engine version" of the verified workload manifest
    workload: str | None = None
    #: the attested receipt key (set only when ``ok``): what the instance's receipts verify under
    receipt_pubkey: bytes | None = None
    #: the chute a validator quorum vouched for (``verify="quorum"``: no model is seen)
    vouched_chute_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def chute_id(self) -> str | None:
        """The chute the attested instance serves (derived from its model)."""
        if self.vouched_chute_id is not None:
            return self.vouched_chute_id
        return chute_id_for_model(self.model) if self.model else None

    def error(self) -> InstanceVerificationError:
        """The first reason as a typed error naming the instance."""
        first = self.reasons[0] if self.reasons else Reason("unknown", "not verified")
        return InstanceVerificationError(self.instance_id, first.code, first.message)

    def tree(self) -> list[str]:
        """The verdict as indented lines: quote, TCB, measurements, GPU, binding, manifest."""
        a = self.attestation
        codes = {r.code for r in self.reasons}
        out = [f"instance {self.instance_id}: {'VERIFIED' if self.ok else 'REFUSED'}"]
        if a is not None and a.simulated:
            out.append("  !! SIMULATED TEE evidence (no confidentiality; development only)")
        out.append(f"  quote        sha256 {self.quote_sha256 or '-'}")
        if a is not None:
            adv = ", ".join(a.advisories) or "none"
            out.append(f"  tcb          status {a.tcb_status or 'unknown'}, advisories {adv}")
            out.append(f"  measurements profile {a.profile or 'NONE (not allowlisted)'}")
        if self.measurements is not None:
            for reg, value in self.measurements.to_hex().items():
                out.append(f"    {reg:<6} {value[:32]}...")
        if a is not None:
            out.append(f"  gpu          {a.gpu_count} x {a.gpu_model or '-'}")
            for note in a.notes:
                out.append(f"    note: {note}")
        bound = "binding_mismatch" not in codes and a is not None and not (
            codes & {"key_mismatch", "instance_id_mismatch", "instance_id_not_derived"})
        out.append(f"  binding      {'nonce + key + hotkey bound in report_data' if bound else 'NOT established'}"
                   + (f" (hotkey {self.hotkey})" if self.hotkey else ""))
        manifest = a.manifest_sha384 if a is not None else None
        if manifest:
            out.append(f"  manifest     sha384 {manifest[:32]}... (replayed from the RTMR3 event log)")
            out.append(f"    workload {self.workload or '-'}")
        else:
            out.append("  manifest     NOT attested")
        out.append(f"  e2ee         versions {list(self.e2e_versions) or '-'}")
        for r in self.reasons:
            out.append(f"  x {r.code}: {r.message}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (no key material beyond the public key's hash)."""
        return {
            "instance_id": self.instance_id, "ok": self.ok,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "attestation": self.attestation.to_dict() if self.attestation else None,
            "hotkey": self.hotkey, "model": self.model,
            "e2e_versions": list(self.e2e_versions), "quote_sha256": self.quote_sha256,
            "measurements": self.measurements.to_hex() if self.measurements else None,
            "workload": self.workload,
        }


def _workload(manifest: dict[str, Any] | None) -> str | None:
    """A one-line description of a verified manifest (its fields, bounded)."""
    if not isinstance(manifest, dict):
        return None
    f = {k: str(manifest.get(k, "?"))[:80] for k in
         ("model_id", "model_revision", "engine", "engine_version")}
    return f"{f['model_id']}@{f['model_revision']} on {f['engine']} {f['engine_version']}"


def _refuse(instance_id: str, code: str, message: str, **kw: Any) -> ClientVerdict:
    return ClientVerdict(instance_id, (Reason(code, message),), **kw)


def parse_answer(raw: bytes) -> ParsedAnswer:
    """Step 1: bounded, well-formed answer; raises ``AttestationError`` subclasses."""
    if len(raw) > MAX_ATTEST_RESPONSE_BYTES:
        raise AttestationError("attestation answer exceeds the size limit")
    try:
        data = parse_json(raw)
        response = AttestResponse.model_validate(data)
    except (ValueError, ValidationError) as exc:
        raise AttestationError("attestation answer is not an AttestResponse") from exc
    try:
        pubkey = decode_public_key(response.e2e_pubkey)
    except E2EEError as exc:
        raise AttestationError("attested e2e_pubkey is not an ML-KEM-768 key") from exc
    try:
        receipt_key = (decode_receipt_key(response.receipt_pubkey)
                       if response.receipt_pubkey is not None else None)
    except ValueError as exc:
        raise AttestationError("attested receipt_pubkey is not an Ed25519 key") from exc
    return ParsedAnswer(response, Evidence.from_wire(data), pubkey, receipt_key)


def check_instance(verifier: Verifier, *, instance_id: str, offered_pubkey: bytes,
                   nonce: bytes, answer: bytes | ParsedAnswer, now: int,
                   require_v2: bool = True, chute_id: str | None = None) -> ClientVerdict:
    """Run steps 1-4 (module doc) at ``now`` (Unix seconds). Never raises."""
    try:
        parsed = answer if isinstance(answer, ParsedAnswer) else parse_answer(answer)
    except AttestationError as exc:
        return _refuse(instance_id, "malformed_answer", str(exc))
    resp, key = parsed.response, parsed.e2e_pubkey
    facts: dict[str, Any] = {
        "hotkey": resp.hotkey, "model": resp.model,
        "e2e_versions": tuple(v for v in resp.e2e_versions if isinstance(v, int)),
        "quote_sha256": hashlib.sha256(parsed.evidence.tdx_quote).hexdigest(),
    }
    try:
        facts["measurements"] = parse_quote(parsed.evidence.tdx_quote).report.measurements
    except QuoteFormatError:
        pass  # the verifier reports quote_format
    if resp.instance_id != instance_id:
        return _refuse(instance_id, "instance_id_mismatch",
                       "the relayed evidence is for another instance", **facts)
    if instance_id_for_key(key) != instance_id:
        return _refuse(instance_id, "instance_id_not_derived",
                       "instance id is not derived from the attested key", **facts)
    if key != offered_pubkey:
        return _refuse(instance_id, "key_mismatch",
                       "the key the gateway listed is not the attested key", **facts)
    if resp.chute_id != chute_id_for_model(resp.model) or (
            chute_id is not None and resp.chute_id != chute_id):
        return _refuse(instance_id, "chute_mismatch",
                       "the instance does not serve the requested model", **facts)
    verdict = verifier.verify(parsed.evidence, nonce=nonce, e2e_pubkey=key,
                              hotkey_ss58=resp.hotkey, now=now, chute_id=resp.chute_id,
                              receipt_pubkey=parsed.receipt_pubkey)
    reasons = list(verdict.reasons)
    facts["workload"] = _workload(parsed.evidence.workload_manifest) \
        if verdict.manifest_sha384 else None
    if require_v2 and E2EE_VERSION_V2 not in facts["e2e_versions"]:
        reasons.append(Reason("no_v2", "the instance does not serve E2EE v2"))
    if parsed.receipt_pubkey is None:
        reasons.append(Reason("no_receipt_key",
                              "the instance attests no receipt key: its answers cannot be audited"))
    return ClientVerdict(instance_id, tuple(reasons), verdict,
                         key if not reasons else None, **facts,
                         receipt_pubkey=parsed.receipt_pubkey if not reasons else None)
