"""The validator's verifier: evidence in, frozen :class:`Verdict` out. Never raises
for bad evidence.

Steps (each ends in :class:`ReasonCode` members; a failing step 1-3 stops early):

1. shape    nonce length, TEE type (TDX only), strict quote parse, GPU entry parse,
            simulated evidence refused unless ``dangerous_accept_simulated_tee``
2. nonce    optional :class:`ChallengeBook`: the nonce must be issued and unused
3. crypto   DCAP via dcap-qvl at ``now`` with collateral from the source (or the
            development root for simulated quotes), embedded Intel root pinned;
            each GPU entry: chain to the pinned NVIDIA root, nonce, signature;
            with ``gpu_online`` (an injected :class:`RevocationChecker`, e.g.
            :class:`~chutes_subnet.attestation.fetch.ocsp_client.GpuOnlineChecker`):
            OCSP revocation of every GPU chain certificate
4. policy   TCB status/advisories, DEBUG, TD fields (MRSEAM, attributes, XFAM,
            MRCONFIGID/MROWNER/MROWNERCONFIG, TEE_TCB_SVN), measurement profile,
            GPU model/count
5. workload RTMR3 event log replays to the quote's RTMR3 and measures exactly one
            manifest, published for the claimed chute (:mod:`.workload_check`)
6. binding  report_data == build_report_data(nonce, e2e_pubkey, hotkey[, receipt_pubkey])

Steps 4-6 run on verified data only, and all their violations are reported. The
steps share one :class:`_Findings` record (what is known so far) from which the verdict
is built, also when a step stops early.

Pure: I/O is only what the injected collateral source and revocation checker do.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from chutes_subnet.errors import (
    CollateralError,
    GpuEvidenceFormatError,
    QuoteFormatError,
)
from chutes_subnet.wire.protocol import ATTEST_NONCE_BYTES

from .binding import binding_matches
from .challenges import ChallengeBook
from .collateral import CollateralSource
from .dcap import DcapVerificationError, check_embedded_root, verify_dcap
from .evidence import Evidence
from .gpu import (
    MAX_GPUS,
    GpuCheckResult,
    GpuEvidenceEntry,
    nvidia_root_der,
    parse_gpu_entry,
    verify_gpu_evidence,
)
from .hardware_identity import gpu_identity, platform_identity
from .ocsp import (
    REVOCATION_SKIPPED_NOTE,
    REVOCATION_UNUSABLE_NOTE,
    RevocationChecker,
    RevocationStatus,
)
from .policy import EvidenceFacts, Policy
from .quote import TEE_TYPE_TDX, TdxQuote, parse_header, parse_quote
from .reasons import Reason, ReasonCode, Verdict
from .rim import RimStore, compare_rim
from .simulated_tee import (
    SimulatedVerificationError,
    dev_gpu_root_der,
    is_simulated_quote,
    verify_simulated_quote,
)
from .workload_check import ManifestSource, check_workload

__all__ = ["Verifier"]

log = logging.getLogger(__name__)
RIM_NOTE = "gpu reference measurements (RIM) not checked"
WORKLOAD_NOTE = "workload not attested (development policy: no RTMR3 workload event)"


class _Stop(Exception):
    def __init__(self, *reasons: Reason) -> None:
        self.reasons = reasons


@dataclass
class _Findings:
    """What the steps of one verification established so far (the verdict's inputs)."""

    chute_id: str | None
    simulated: bool = False
    gpu_entries: list[GpuEvidenceEntry] = field(default_factory=list)
    tcb_status: str | None = None
    advisories: tuple[str, ...] = ()
    gpus: GpuCheckResult | None = None
    gpu_revocation: RevocationStatus | None = None
    platform_id: str | None = None
    profile: str | None = None
    workload_skipped: bool = False
    manifest_sha384: str | None = None


class Verifier:
    """Verify miner evidence against a :class:`Policy`.

    ``collateral`` supplies DCAP collateral (required for real quotes; a missing
    source is reported as ``collateral_unavailable``). ``challenges``, when given, is
    consumed for every verification so a nonce can only ever be used once.
    ``gpu_online``, when given, checks GPU certificate revocation over OCSP; without
    it (or when the responder is unreachable) verdicts carry
    :data:`REVOCATION_SKIPPED_NOTE`, unless ``require_revocation`` (then the evidence
    is refused with ``gpu_revocation_unchecked``). ``rims`` (operator RIM files)
    turns on the comparison with NVIDIA's reference measurements. ``manifests`` supplies each chute's published
    workload manifests (default: the policy's ``[[manifests]]``).
    """

    def __init__(
        self,
        policy: Policy,
        collateral: CollateralSource | None = None,
        *,
        dangerous_accept_simulated_tee: bool = False,
        challenges: ChallengeBook | None = None,
        gpu_root_der: bytes | None = None,
        gpu_online: RevocationChecker | None = None,
        rims: RimStore | None = None,
        require_revocation: bool = False,
        manifests: ManifestSource | None = None,
    ) -> None:
        self.policy = policy
        self.manifests = manifests if manifests is not None else policy.manifest_source()
        self.collateral = collateral
        self.dangerous_accept_simulated_tee = dangerous_accept_simulated_tee
        self.challenges = challenges
        self._gpu_root = gpu_root_der or nvidia_root_der()
        self.gpu_online = gpu_online
        self.rims = rims
        self.require_revocation = require_revocation
        #: whether an accepted simulated verdict was logged (at WARNING once, then DEBUG:
        #: a fleet-sized round would log thousands of identical lines; every verdict
        #: still carries ``simulated``)
        self._simulated_logged = False
        if dangerous_accept_simulated_tee:
            log.warning("verifier in DEVELOPMENT mode: simulated (forgeable) TEE evidence "
                        "will be accepted; never use this on a real network")

    def verify(self, evidence: Evidence, *, nonce: bytes, e2e_pubkey: bytes,
               hotkey_ss58: str, now: int | None = None, chute_id: str | None = None,
               receipt_pubkey: bytes | None = None) -> Verdict:
        """Run every step at ``now`` (Unix seconds, default: wall clock).

        ``chute_id`` is the chute the instance claims to serve; its measured workload
        manifest must name it and be published for it. With ``receipt_pubkey`` the
        binding must be report_data layout v2 (:mod:`.binding`).
        """
        when = int(time.time()) if now is None else int(now)
        findings = _Findings(chute_id=chute_id)
        try:
            return self._verify(evidence, nonce, e2e_pubkey, hotkey_ss58, when, findings,
                                receipt_pubkey)
        except _Stop as stop:
            return self._verdict(stop.reasons, findings)
        except Exception:  # the verifier must never raise on evidence (logged)
            log.exception("unexpected error while verifying evidence")
            return self._verdict(
                (Reason.of(ReasonCode.MALFORMED_EVIDENCE, "evidence could not be verified"),), findings)

    def _verdict(self, reasons: tuple[Reason, ...], findings: _Findings) -> Verdict:
        simulated, gpus = findings.simulated, findings.gpus
        notes: list[str] = []
        if simulated:
            notes.append("SIMULATED evidence: INSECURE, no TEE guarantees")
        if gpus is not None and gpus.count:
            revocation = findings.gpu_revocation
            if revocation == RevocationStatus.SKIPPED_UNUSABLE:
                notes.append(REVOCATION_UNUSABLE_NOTE)
            elif revocation in (None, RevocationStatus.SKIPPED_OFFLINE):
                notes.append(REVOCATION_SKIPPED_NOTE)
            if self.rims is None:
                notes.append(RIM_NOTE)
        if findings.workload_skipped:
            notes.append(WORKLOAD_NOTE)
        verdict = Verdict(
            ok=not reasons,
            reasons=tuple(reasons),
            tcb_status=findings.tcb_status,
            advisories=findings.advisories,
            simulated=simulated,
            gpu_count=gpus.count if gpus is not None else 0,
            gpu_model=gpus.model if gpus is not None else None,
            profile=findings.profile,
            notes=tuple(notes),
            manifest_sha384=findings.manifest_sha384,
            platform_id=findings.platform_id,
            gpu_ids=tuple(gpu_identity(r) for r in gpus.reports) if gpus is not None else (),
        )
        if simulated and verdict.ok:
            log.log(logging.DEBUG if self._simulated_logged else logging.WARNING,
                    "accepted SIMULATED attestation evidence (INSECURE, development mode)")
            self._simulated_logged = True
        return verdict

    def _shape(self, evidence: Evidence, nonce: bytes, findings: _Findings) -> TdxQuote:
        if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != ATTEST_NONCE_BYTES:
            raise _Stop(Reason.of(ReasonCode.NONCE_INVALID, "challenge nonce must be 32 bytes"))
        if not isinstance(evidence, Evidence) or not isinstance(evidence.tdx_quote, bytes):
            raise _Stop(Reason.of(ReasonCode.MALFORMED_EVIDENCE, "evidence object is malformed"))
        try:
            header = parse_header(evidence.tdx_quote)
            if header.tee_type != TEE_TYPE_TDX:
                raise _Stop(Reason.of(ReasonCode.TEE_TYPE_NOT_TDX,
                                      f"quote is from TEE type {header.tee_type:#x}, not TDX"))
            quote = parse_quote(evidence.tdx_quote)
        except QuoteFormatError as exc:
            raise _Stop(Reason.of(ReasonCode.QUOTE_FORMAT, str(exc))) from exc
        simulated = evidence.simulated or is_simulated_quote(quote)
        findings.simulated = simulated and self.dangerous_accept_simulated_tee
        if simulated and not self.dangerous_accept_simulated_tee:
            raise _Stop(Reason.of(ReasonCode.SIMULATED_TEE,
                                  "simulated TEE evidence is only accepted in development mode"))
        if not isinstance(evidence.gpu_evidence, list) or len(evidence.gpu_evidence) > MAX_GPUS:
            raise _Stop(Reason.of(ReasonCode.GPU_EVIDENCE_FORMAT, "too many GPU evidence entries"))
        try:
            findings.gpu_entries = [parse_gpu_entry(e) for e in evidence.gpu_evidence]
        except GpuEvidenceFormatError as exc:
            raise _Stop(Reason.of(ReasonCode.GPU_EVIDENCE_FORMAT, str(exc))) from exc
        return quote

    def _crypto(self, quote: TdxQuote, nonce: bytes, now: int, findings: _Findings) -> GpuCheckResult:
        if findings.simulated:
            try:
                verify_simulated_quote(quote, now)
            except SimulatedVerificationError as exc:
                raise _Stop(Reason.of(exc.code, str(exc))) from exc
            findings.tcb_status, root = "UpToDate", dev_gpu_root_der()
        else:
            if self.collateral is None:
                raise _Stop(Reason.of(ReasonCode.COLLATERAL_UNAVAILABLE, "no collateral source configured"))
            try:
                collateral = self.collateral.get(quote.raw, now)
                check_embedded_root(quote)
                result = verify_dcap(quote.raw, collateral, now)
            except CollateralError as exc:
                raise _Stop(Reason.of(ReasonCode.COLLATERAL_UNAVAILABLE, str(exc))) from exc
            except DcapVerificationError as exc:
                raise _Stop(Reason.of(exc.code, str(exc))) from exc
            findings.tcb_status, findings.advisories = result.status, tuple(result.advisories)
            root = self._gpu_root
        gpus = verify_gpu_evidence(findings.gpu_entries, nonce, root_der=root, now=now)
        findings.gpus = gpus
        if gpus.reasons:
            raise _Stop(*gpus.reasons)
        if self.gpu_online is not None and gpus.count:
            self._revocation(self.gpu_online, findings.gpu_entries, now, findings)
            if self.require_revocation and findings.gpu_revocation != RevocationStatus.GOOD:
                raise _Stop(Reason.of(ReasonCode.GPU_REVOCATION_UNCHECKED,
                                      "GPU certificate revocation could not be checked (OCSP "
                                      "responder unreachable and no cached answer)"))
        return gpus

    @staticmethod
    def _revocation(checker: RevocationChecker, entries: list[GpuEvidenceEntry], now: int,
                    findings: _Findings) -> None:
        overall = RevocationStatus.GOOD
        for i, entry in enumerate(entries):
            outcome = checker.check_chain(entry.chain_der, now)
            if outcome.rejected:
                findings.gpu_revocation = outcome.status
                what = "revoked" if outcome.status == RevocationStatus.REVOKED else "of unknown status"
                raise _Stop(Reason.of(ReasonCode.GPU_CERT_REVOKED,
                                      f"GPU {i}: certificate {outcome.index} is {what} (OCSP)"))
            if outcome.status != RevocationStatus.GOOD and overall != RevocationStatus.SKIPPED_UNUSABLE:
                overall = outcome.status
        findings.gpu_revocation = overall

    def _verify(self, evidence: Evidence, nonce: bytes, e2e_pubkey: bytes, hotkey: str,
                now: int, findings: _Findings, receipt_pubkey: bytes | None) -> Verdict:
        quote = self._shape(evidence, nonce, findings)
        if self.challenges is not None and not self.challenges.consume(bytes(nonce)).ok:
            raise _Stop(Reason.of(ReasonCode.NONCE_UNKNOWN, "challenge nonce is unknown, used or expired"))
        gpus = self._crypto(quote, bytes(nonce), now, findings)
        findings.platform_id = platform_identity(quote)
        report = quote.report
        reasons = self.policy.check(EvidenceFacts(
            tcb_status=findings.tcb_status, advisories=findings.advisories,
            debug=report.debug, measurements=report.measurements,
            gpu_model=gpus.model, gpu_count=gpus.count,
        ))
        reasons.extend(self.policy.check_td(report))
        reasons.extend(self._gpu_policy(findings.gpu_entries, gpus))
        profile = self.policy.match_profile(report.measurements)
        findings.profile = profile.name if profile else None
        workload = self._workload(evidence, report.rtmr[3], findings)
        if workload is not None:
            reasons.append(workload)
        if not binding_matches(report.report_data, nonce, e2e_pubkey, hotkey, receipt_pubkey):
            reasons.append(Reason.of(ReasonCode.BINDING_MISMATCH,
                                     "report_data does not bind this nonce, these keys and hotkey"))
        return self._verdict(tuple(reasons), findings)

    def _gpu_policy(self, entries: list[GpuEvidenceEntry], gpus: GpuCheckResult) -> list[Reason]:
        """CC mode / DevTools as the evidence states them, and RIM comparison."""
        found: dict[ReasonCode, list[str]] = {}
        for i, (entry, report) in enumerate(zip(entries, gpus.reports, strict=False)):
            if entry.claimed_cc is False:
                found.setdefault(ReasonCode.GPU_CC_MODE_OFF, []).append(str(i))
            if entry.claimed_devtools:
                found.setdefault(ReasonCode.GPU_DEVTOOLS_MODE, []).append(str(i))
            if self.rims is None:
                continue
            driver, vbios = self.rims.lookup(report.driver_version, report.vbios_version)
            if driver is None or vbios is None:
                found.setdefault(ReasonCode.GPU_RIM_UNAVAILABLE, []).append(
                    f"{i} (driver {report.driver_version}, VBIOS {report.vbios_version})")
                continue
            bad = compare_rim(entry.spdm.blocks, (driver, vbios))
            if bad:
                found.setdefault(ReasonCode.GPU_RIM_MISMATCH, []).append(
                    f"{i} (indices {', '.join(map(str, bad[:8]))})")
        text = {ReasonCode.GPU_CC_MODE_OFF: "confidential computing is off on GPU",
                ReasonCode.GPU_DEVTOOLS_MODE: "DevTools (debug) mode is on for GPU",
                ReasonCode.GPU_RIM_UNAVAILABLE: "no operator RIM for GPU",
                ReasonCode.GPU_RIM_MISMATCH: "measurements differ from the RIM for GPU"}
        return [Reason.of(code, f"{text[code]} {'; '.join(which[:4])}")
                for code, which in found.items()]

    def _workload(self, evidence: Evidence, rtmr3: bytes, findings: _Findings) -> Reason | None:
        required = self.policy.workload_required
        if not required and not evidence.event_log and evidence.workload_manifest is None:
            findings.workload_skipped = True
            return None
        chute = findings.chute_id if isinstance(findings.chute_id, str) else None
        outcome = check_workload(evidence.event_log, evidence.workload_manifest, rtmr3,
                                 chute, self.manifests, require_published=required)
        if outcome.manifest is not None:
            findings.manifest_sha384 = outcome.manifest.sha384().hex()
        return outcome.reason
