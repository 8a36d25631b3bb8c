"""TD field policy (``[td]``) on real quotes: every rule accepts the real vector,
flipping the field violates exactly that rule, and flipping it in the signed quote
breaks the quote signature (so the policy step is also tested directly on parsed
quotes)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chutes_subnet.attestation.verify.collateral import StaticCollateralSource
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.td_policy import TD_FIELDS, TdPolicy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.errors import PolicyFileError
from tests.vector_files import VECTORS_DIR

TDX = VECTORS_DIR / "tdx"
V4_NOW = 1751624191


def _offsets() -> dict[str, int]:
    """Field offsets from the TD report 1.0 layout (quote.py docstring)."""
    sizes = [("tee_tcb_svn", 16), ("mr_seam", 48), ("mr_signer_seam", 48),
             ("seam_attributes", 8), ("td_attributes", 8), ("xfam", 8), ("mr_td", 48),
             ("mr_config_id", 48), ("mr_owner", 48), ("mr_owner_config", 48)]
    out, pos = {}, 48
    for name, size in sizes:
        out[name] = pos
        pos += size
    return out


FIELD_AT = _offsets()


@pytest.fixture(scope="module")
def quotes() -> dict[str, bytes]:
    return {"v4": (TDX / "tdx_v4_quote.bin").read_bytes(),
            "dstack": bytes(json.loads((VECTORS_DIR / "tdx-eventlog" / "quote.json").read_text()))}


def test_layout_offsets_agree_with_the_parser(quotes):
    report = parse_quote(quotes["v4"]).report
    for name, at in FIELD_AT.items():
        value = getattr(report, name)
        assert quotes["v4"][at:at + len(value)] == value, name


def test_default_policy_accepts_the_real_v4_quote_fields(quotes):
    assert Policy.default().check_td(parse_quote(quotes["v4"]).report) == []


def test_dstack_quote_violates_only_mrconfigid(quotes):
    """dstack >= 0.5.1 puts the compose hash into MRCONFIGID: a miner TD launches with
    none, so the default policy refuses it; a policy listing it accepts it."""
    report = parse_quote(quotes["dstack"]).report
    assert [r.code for r in Policy.default().check_td(report)] == ["mrconfigid_mismatch"]
    td = Policy.default().td.accepting(mrconfigid=report.mr_config_id)
    assert td.check(report) == []


CASES = [(key, attr, code) for key, (attr, _size, code, _name) in TD_FIELDS.items()]


@pytest.mark.parametrize("key, attr, code", CASES, ids=[c[0] for c in CASES])
def test_flipping_each_field_violates_its_own_rule(quotes, key, attr, code):
    raw = quotes["v4"]
    report = parse_quote(raw).report
    at = FIELD_AT[attr]
    flipped = bytearray(raw)
    flipped[at] ^= 0x04
    tampered = parse_quote(bytes(flipped)).report
    assert getattr(tampered, attr) != getattr(report, attr)
    assert [r.code for r in Policy.default().check_td(tampered)] == [code.value]


def test_tee_tcb_svn_minimum_is_per_component(quotes):
    report = parse_quote(quotes["v4"]).report  # 06 01 03 00 ..., floor 03 01 02
    low = replace(report, tee_tcb_svn=bytes.fromhex("02010300") + bytes(12))
    assert [r.code for r in Policy.default().check_td(low)] == ["tee_tcb_svn_too_low"]
    higher_first = replace(report, tee_tcb_svn=bytes.fromhex("09000300") + bytes(12))
    assert [r.code for r in Policy.default().check_td(higher_first)] == ["tee_tcb_svn_too_low"]
    newer = replace(report, tee_tcb_svn=bytes.fromhex("0b010400") + bytes(12))
    assert Policy.default().check_td(newer) == []


def test_debug_bit_and_dangerous_allow_debug(quotes):
    report = parse_quote(quotes["v4"]).report
    debug = replace(report, td_attributes=bytes([report.td_attributes[0] | 1])
                    + report.td_attributes[1:])
    assert [r.code for r in Policy.default().check_td(debug)] == ["td_attributes_mismatch"]
    lab = replace(Policy.default(), dangerous_allow_debug=True)
    assert lab.check_td(debug) == []


@pytest.mark.parametrize("key, attr, code", CASES, ids=[c[0] for c in CASES])
def test_flipped_field_in_a_signed_quote_fails_the_signature(quotes, key, attr, code):
    raw = quotes["v4"]
    m = parse_quote(raw).report.measurements
    policy = Policy.default().with_profiles(MeasurementProfile("v4", m, None, 0))
    verifier = Verifier(policy, StaticCollateralSource(collateral_from_json(
        (TDX / "tdx_v4_quote.collateral.json").read_text())))
    flipped = bytearray(raw)
    flipped[FIELD_AT[attr]] ^= 0x04
    verdict = verifier.verify(Evidence(bytes(flipped)), nonce=bytes(32), e2e_pubkey=b"k",
                              hotkey_ss58="5x", now=V4_NOW)
    assert verdict.reason_codes == ("quote_signature_invalid",)


def test_policy_file_td_keys(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('version = 1\n[td]\nmrseam = []\nxfam = ["e700000000000000"]\n'
                    'min_tee_tcb_svn = "00000000000000000000000000000000"\n')
    p = Policy.load(path)
    default = Policy.default().td
    assert p.td.mrseam == frozenset() and p.td.xfam == {bytes.fromhex("e700000000000000")}
    assert p.td.attributes == default.attributes and p.td.mrowner == default.mrowner
    assert p.td.min_tee_tcb_svn == bytes(16)


@pytest.mark.parametrize("td, needle", [
    ('mrseam = "ab"', "list of hex"),
    ('mrseam = ["ab"]', "96 hex"),
    ('attributes = ["zz00000000000000"]', "16 hex"),
    ('min_tee_tcb_svn = "00"', "32 hex"),
    ("unknown_key = 1", "unknown keys"),
])
def test_policy_file_td_errors(tmp_path, td, needle):
    path = tmp_path / "p.toml"
    path.write_text(f"version = 1\n[td]\n{td}\n")
    with pytest.raises(PolicyFileError, match=needle):
        Policy.load(path)


def test_empty_td_policy_accepts_nothing(quotes):
    codes = [r.code for r in TdPolicy().check(parse_quote(quotes["v4"]).report)]
    assert codes == [c.value for _k, _a, c in CASES] + ["tee_tcb_svn_too_low"]


def test_flipping_tee_tcb_svn_violates_the_minimum_and_breaks_the_signature(quotes):
    raw = bytearray(quotes["v4"])
    raw[FIELD_AT["tee_tcb_svn"]] ^= 0x04  # 0x06 -> 0x02, below the 3.1.2 floor
    tampered = parse_quote(bytes(raw)).report
    assert [r.code for r in Policy.default().check_td(tampered)] == ["tee_tcb_svn_too_low"]
    m = tampered.measurements
    verifier = Verifier(Policy.default().with_profiles(MeasurementProfile("v4", m, None, 0)),
                        StaticCollateralSource(collateral_from_json(
                            (TDX / "tdx_v4_quote.collateral.json").read_text())))
    verdict = verifier.verify(Evidence(bytes(raw)), nonce=bytes(32), e2e_pubkey=b"k",
                              hotkey_ss58="5x", now=V4_NOW)
    assert verdict.reason_codes == ("quote_signature_invalid",)
