"""Conformance on real public vectors (Intel DCAP quotes, NVIDIA H100 evidence)."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest

from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.attestation.verify.collateral import StaticCollateralSource
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.gpu import (
    nvidia_root_der,
    parse_gpu_entry,
    verify_gpu_evidence,
)
from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.reasons import ReasonCode
from chutes_subnet.attestation.verify.verifier import Verifier
from tests.vector_files import VECTORS_DIR as VECTORS

TDX, GPU = VECTORS / "tdx", VECTORS / "gpu"
V4_NOW, V5_NOW, SGX_NOW = 1751624191, 1772707803, 1751624924
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def _collateral(name: str):
    return collateral_from_json((TDX / f"{name}.collateral.json").read_text())


@pytest.fixture(scope="module")
def v4() -> bytes:
    return (TDX / "tdx_v4_quote.bin").read_bytes()


@pytest.fixture(scope="module")
def gpus() -> list[dict]:
    return json.loads((GPU / "h100x8_evidence.json").read_text())


@pytest.fixture(scope="module")
def gpu_nonce(gpus) -> bytes:
    return bytes.fromhex(gpus[0]["nonce"])


@pytest.fixture(scope="module")
def policy(v4) -> Policy:
    m = parse_quote(v4).report.measurements
    return Policy.default().with_profiles(MeasurementProfile("public-vector-h100x8", m, "H100", 8))


@pytest.fixture(scope="module")
def verifier(policy) -> Verifier:
    return Verifier(policy, StaticCollateralSource(_collateral("tdx_v4_quote")))


def test_real_v4_quote_passes_dcap_and_policy_and_fails_only_binding(verifier, v4, gpus, gpu_nonce):
    """Every TD field rule of the default policy holds for the real quote; it is no
    miner's quote, so it measures no workload and binds another challenge."""
    verdict = verifier.verify(Evidence(v4, gpus), nonce=gpu_nonce, e2e_pubkey=b"k" * 1184,
                              hotkey_ss58=HOTKEY, now=V4_NOW)
    assert verdict.reason_codes == (ReasonCode.WORKLOAD_EVENT_MISSING.value,
                                    ReasonCode.BINDING_MISMATCH.value)
    assert verdict.tcb_status == "UpToDate" and verdict.advisories == ()
    assert (verdict.gpu_count, verdict.gpu_model, verdict.profile) == (8, "H100", "public-vector-h100x8")
    assert not verdict.ok and not verdict.simulated
    assert verdict.to_dict()["reasons"][1]["code"] == "binding_mismatch"


def test_real_v4_report_data_is_the_published_value(v4):
    rd = parse_quote(v4).report.report_data
    assert rd[:32].hex() == "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9"
    assert parse_quote(v4).report.debug is False


def test_same_inputs_fail_at_todays_time(verifier, v4, gpu_nonce):
    verdict = verifier.verify(Evidence(v4, []), nonce=gpu_nonce, e2e_pubkey=b"k", hotkey_ss58=HOTKEY,
                              now=max(int(time.time()), 1775215318))
    assert verdict.reason_codes == (ReasonCode.COLLATERAL_EXPIRED.value,)


@pytest.mark.parametrize("quote_file,collateral,now,code", [
    ("tdx_v5_outdated_quote.bin", "tdx_v5_outdated_quote", V5_NOW, ReasonCode.TCB_LEVEL_NOT_FOUND),
    ("tdx_v4_old_tcb_quote.hex", "tdx_v4_quote", V4_NOW, ReasonCode.TCB_LEVEL_NOT_FOUND),
    ("sgx_v3_quote.bin", "sgx_v3_quote", SGX_NOW, ReasonCode.TEE_TYPE_NOT_TDX),
], ids=["v5-outdated", "v4-old-tcb", "sgx-v3"])
def test_rejected_real_quotes(policy, quote_file, collateral, now, code):
    raw = (TDX / quote_file).read_bytes()
    if quote_file.endswith(".hex"):
        raw = bytes.fromhex(raw.decode().strip().removeprefix("0x"))
    v = Verifier(policy, StaticCollateralSource(_collateral(collateral)))
    verdict = v.verify(Evidence(raw, []), nonce=bytes(32), e2e_pubkey=b"k", hotkey_ss58=HOTKEY, now=now)
    assert verdict.reason_codes == (code.value,)


def _flip_positions(length: int) -> list[int]:
    fixed = [0, 1, 2, 4, 8, 12, 30, 47,             # header
             48, 200, 250, 600, 631,                # TD report (MRTD, RTMRs, report_data)
             632, 636, 700, 764, 765, 766, 769,     # sig length, ECDSA sig, cert type/size
             770, 1000, 1154, 1220, 1252, 1256,     # QE report, its signature, auth data
             1258, 1285, 1610, 3030, 3990, 4500,    # PEM chain incl. newlines and root
             4934, 4935, 4936, 5005]                # NUL terminator and zero padding
    return sorted(set(fixed + list(range(0, length, 97))))


def test_single_flipped_byte_anywhere_is_rejected(verifier, v4):
    positions = _flip_positions(len(v4))
    assert len(positions) > 80
    for pos in positions:
        for mask in (0x01, 0x80):
            bad = bytearray(v4)
            bad[pos] ^= mask
            verdict = verifier.verify(Evidence(bytes(bad), []), nonce=bytes(32), e2e_pubkey=b"k",
                                      hotkey_ss58=HOTKEY, now=V4_NOW)
            assert not verdict.ok, (pos, mask)
            assert verdict.reason_codes != (ReasonCode.BINDING_MISMATCH.value,), (pos, mask)


def test_quote_bound_to_our_challenge_would_need_matching_report_data(v4):
    nonce = os.urandom(32)
    assert parse_quote(v4).report.report_data != build_report_data(nonce, b"k", HOTKEY)


# --- GPU ---------------------------------------------------------------------------

def _gpu_check(entries, nonce, now=V4_NOW):
    return verify_gpu_evidence([parse_gpu_entry(e) for e in entries], nonce,
                               root_der=nvidia_root_der(), now=now)


def test_gpu_evidence_verifies_all_eight(gpus, gpu_nonce):
    result = _gpu_check(gpus, gpu_nonce)
    assert result.reasons == () and result.count == 8 and result.model == "H100"
    assert {r.driver_version for r in result.reports} == {"590.12"}
    assert {r.vbios_version for r in result.reports} == {"96.00.A5.00.01"}
    assert len({r.device_id for r in result.reports}) == 8


def test_gpu_evidence_fails_with_another_nonce(gpus):
    result = _gpu_check(gpus, os.urandom(32))
    assert result.count == 0
    assert {r.code for r in result.reasons} == {ReasonCode.GPU_NONCE_MISMATCH.value}


@pytest.mark.parametrize("field,positions", [
    ("evidence", [0, 1, 2, 5, 20, 36, 40, 45, 500, 3000, 3700, 4000, 4177, 4200, 4273]),
    ("certificate", [0, 27, 28, 100, 700, 1500, 3000, 4000, 4400, 4650]),
])
def test_gpu_evidence_one_flipped_byte_fails(gpus, gpu_nonce, field, positions):
    for pos in positions:
        entry = dict(gpus[3])
        raw = bytearray(base64.b64decode(entry[field]))
        raw[pos % len(raw)] ^= 0x01
        entry[field] = base64.b64encode(bytes(raw)).decode()
        try:
            result = _gpu_check([entry], gpu_nonce)
        except Exception as exc:  # noqa: BLE001 - format errors are our own type
            assert type(exc).__name__ == "GpuEvidenceFormatError", pos
            continue
        assert result.count == 0 and result.reasons, (field, pos)


def test_duplicated_gpu_counts_once(gpus, gpu_nonce):
    result = _gpu_check([gpus[0], gpus[0]], gpu_nonce)
    assert result.count == 1
    assert [r.code for r in result.reasons] == [ReasonCode.GPU_DUPLICATE.value]


def test_unsigned_metadata_must_match_signed_values(gpus, gpu_nonce):
    entry = dict(gpus[0], driver_version="999.99")
    assert [r.code for r in _gpu_check([entry], gpu_nonce).reasons] == ["gpu_metadata_mismatch"]


@pytest.mark.parametrize("count,model,code", [
    (4, "H100", ReasonCode.GPU_COUNT_MISMATCH),
    (8, "B200", ReasonCode.GPU_MODEL_MISMATCH),
])
def test_policy_gpu_expectations(v4, gpus, gpu_nonce, count, model, code):
    m = parse_quote(v4).report.measurements
    policy = Policy.default().with_profiles(MeasurementProfile("p", m, model, count))
    v = Verifier(policy, StaticCollateralSource(_collateral("tdx_v4_quote")))
    verdict = v.verify(Evidence(v4, gpus), nonce=gpu_nonce, e2e_pubkey=b"k", hotkey_ss58=HOTKEY,
                       now=V4_NOW)
    assert verdict.reason_codes == (code.value, ReasonCode.WORKLOAD_EVENT_MISSING.value,
                                    ReasonCode.BINDING_MISMATCH.value)


def test_measurement_not_in_allowlist(v4, gpu_nonce):
    v = Verifier(Policy.default(), StaticCollateralSource(_collateral("tdx_v4_quote")))
    verdict = v.verify(Evidence(v4, []), nonce=gpu_nonce, e2e_pubkey=b"k", hotkey_ss58=HOTKEY,
                       now=V4_NOW)
    assert verdict.reason_codes == ("measurement_not_allowed", "workload_event_missing",
                                    "binding_mismatch")
    assert verdict.profile is None
