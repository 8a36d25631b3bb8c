"""The simulated TEE (development only): refused by the default policy whatever it claims,
accepted and flagged in development mode, and caught when it lies."""

from __future__ import annotations

import os

import pytest

from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.attestation.verify.collateral import StaticCollateralSource
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.verifier import Verifier

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def test_simulated_rejected_by_default_policy():
    nonce = os.urandom(32)
    ev = SimulatedProvider(seed=b"s").collect(nonce, b"pk", HOTKEY)
    for claim in (True, False):  # the claim does not matter; the quote decides
        v = Verifier(Policy.default(), StaticCollateralSource(object()))
        verdict = v.verify(Evidence(ev.tdx_quote, ev.gpu_evidence, simulated=claim),
                           nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
        assert verdict.reason_codes == ("simulated_tee",) and not verdict.simulated


def test_simulated_accepted_only_in_dev_mode_and_flagged(dev_verifier, caplog):
    nonce = os.urandom(32)
    ev = SimulatedProvider(seed=b"s").collect(nonce, b"pk", HOTKEY)
    with caplog.at_level("WARNING"):
        verdict = dev_verifier.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert verdict.ok and verdict.simulated and verdict.profile == "simulated-dev"
    assert (verdict.gpu_count, verdict.gpu_model) == (8, "H100")
    assert "INSECURE" in caplog.text and "warning" in verdict.to_dict()


@pytest.mark.parametrize("kwargs,code", [
    ({"debug": True}, ("debug_td", "td_attributes_mismatch")),
    ({"bind_hotkey": "5DAAnrj7VHTznn2AWBemMuyBwZWs6FNFjdyVXUeYum3PTXFy"}, "binding_mismatch"),
    ({"gpu_count": 4}, "gpu_count_mismatch"),
    ({"gpu_model": "B200"}, "gpu_model_mismatch"),
])
def test_simulated_rejections(dev_verifier, kwargs, code):
    nonce = os.urandom(32)
    ev = SimulatedProvider(seed=b"s", **kwargs).collect(nonce, b"pk", HOTKEY)
    verdict = dev_verifier.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert verdict.reason_codes == (code if isinstance(code, tuple) else (code,))


def test_simulated_wrong_key_nonce_and_tamper(dev_verifier):
    nonce = os.urandom(32)
    ev = SimulatedProvider(seed=b"s").collect(nonce, b"pk", HOTKEY)
    assert dev_verifier.verify(ev, nonce=nonce, e2e_pubkey=b"other", hotkey_ss58=HOTKEY
                               ).reason_codes == ("binding_mismatch",)
    other = dev_verifier.verify(ev, nonce=os.urandom(32), e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert set(other.reason_codes) == {"gpu_nonce_mismatch"}
    bad = bytearray(ev.tdx_quote)
    bad[200] ^= 1  # inside MRTD: signed by the attestation key
    tampered = dev_verifier.verify(Evidence(bytes(bad), ev.gpu_evidence, True), nonce=nonce,
                                   e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert tampered.reason_codes == ("quote_signature_invalid",)


def test_simulated_quote_parses_like_a_real_one():
    ev = SimulatedProvider(seed=b"s", debug=True).collect(bytes(32), b"pk", HOTKEY)
    q = parse_quote(ev.tdx_quote)
    assert q.header.version == 4 and q.report.debug
    assert q.report.report_data == build_report_data(bytes(32), b"pk", HOTKEY)
