"""The attestation policy: strict and fail-closed by default, development relaxations, policy
files (round trip and one-line refusals)."""

from __future__ import annotations

import pytest

from chutes_subnet.attestation.verify.policy import EvidenceFacts, Policy, measure_simulated_profile
from chutes_subnet.errors import PolicyFileError

# --- policy ------------------------------------------------------------------------


def _facts(**kw):
    base = {"tcb_status": "UpToDate", "advisories": (), "debug": False,
                "measurements": measure_simulated_profile().measurements, "gpu_model": "H100", "gpu_count": 8}
    base.update(kw)
    return EvidenceFacts(**base)


def test_default_policy_is_strict_and_fails_closed():
    p = Policy.default()
    assert p.accepted_tcb_statuses == {"UpToDate"} and not p.dangerous_allow_debug
    assert [r.code for r in p.check(_facts())] == ["measurement_not_allowed"]
    codes = [r.code for r in Policy.development().check(
        _facts(tcb_status=None, debug=None, advisories=("INTEL-SA-00615",)))]
    assert codes == ["tcb_status_not_accepted", "advisory_not_accepted", "debug_td"]
    assert Policy.development().check(_facts()) == []


def test_policy_file_round_trip(tmp_path):
    m = measure_simulated_profile().measurements.to_hex()
    text = f"""
version = 1
[tcb]
accepted_statuses = ["UpToDate", "SWHardeningNeeded"]
accepted_advisories = ["INTEL-SA-00615"]
[[profiles]]
name = "a"
mrtd = "{m['mrtd']}"
rtmr0 = "{m['rtmr0']}"
rtmr1 = "{m['rtmr1']}"
rtmr2 = "{m['rtmr2']}"
rtmr3 = "{m['rtmr3']}"
gpu_model = "H100"
gpu_count = 8
"""
    path = tmp_path / "policy.toml"
    path.write_text(text)
    p = Policy.load(path)
    assert p.check(_facts(tcb_status="SWHardeningNeeded", advisories=("INTEL-SA-00615",))) == []
    assert [r.code for r in p.check(_facts(tcb_status="OutOfDate"))] == ["tcb_status_not_accepted"]
    assert [r.code for r in p.check(_facts(gpu_count=7, gpu_model="B200"))] == [
        "gpu_count_mismatch", "gpu_model_mismatch"]


@pytest.mark.parametrize("text,needle", [
    ("version = 2", "version"),
    ("version = 1\n[tcb]\naccepted_statuses = ['Revoked']", "Revoked"),
    ("version = 1\n[td]\ndangerous_allow_debug = 'yes'", "dangerous_allow_debug"),
    ("version = 1\n[[profiles]]\nname = 'x'\nmrtd = 'zz'", "mrtd"),
    ("version = = 1", "cannot read"),
])
def test_bad_policy_files(tmp_path, text, needle):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(PolicyFileError, match=needle):
        Policy.load(path)
