"""The verifier never raises on garbage evidence: every failure is a verdict with reasons."""

from __future__ import annotations

from chutes_subnet.attestation.verify.evidence import Evidence

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


def test_verifier_never_raises_on_garbage(dev_verifier):
    for ev in (Evidence(b"", []), Evidence(b"\x04\x00" * 40, [{"a": 1}]), "not evidence"):
        verdict = dev_verifier.verify(ev, nonce=bytes(32), e2e_pubkey=b"k", hotkey_ss58=HOTKEY)  # type: ignore[arg-type]
        assert not verdict.ok and verdict.reasons
    assert dev_verifier.verify(Evidence(b"x", []), nonce=b"1", e2e_pubkey=b"k",
                               hotkey_ss58=HOTKEY).reason_codes == ("nonce_invalid",)
