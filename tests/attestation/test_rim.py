"""GPU policy: NVIDIA RIM parsing and comparison (public RIMs from nvtrust), CC mode
and DevTools as the evidence states them, and the OCSP offline posture."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from chutes_subnet.attestation.fetch.ocsp_client import GpuOnlineChecker
from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.collateral import StaticCollateralSource
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.gpu import parse_gpu_entry
from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.rim import (
    Rim,
    RimFormatError,
    RimStore,
    compare_rim,
    parse_rim,
)
from chutes_subnet.attestation.verify.simulated_tee import DEV_SEED
from chutes_subnet.attestation.verify.verifier import Verifier
from tests.vector_files import VECTORS_DIR

RIMS = VECTORS_DIR / "gpu" / "rim"
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
V4_NOW = 1751624191


def test_public_rims_parse():
    store = RimStore.from_dir(RIMS)
    assert len(store) == 3  # the PROD and test VBIOS RIMs of 96.00.5E.00.01 share a version
    prod = parse_rim((RIMS / "1010_0200_882_96005E0001_PROD.swidtag").read_bytes())
    assert (prod.product, prod.version, prod.kind) == ("GH100", "96.00.5E.00.01", "vbios")
    assert len(prod.measurements) == 64 and len(prod.active()) == 12
    assert len(prod.measurements[12][1]) == 4  # alternatives
    driver = parse_rim((RIMS / "Driver_RIM_test_no_gpu.swidtag").read_bytes())
    assert (driver.version, driver.kind, len(driver.active())) == ("545.00", "driver", 21)
    # driver and VBIOS RIMs measure disjoint indices, as NVIDIA's verifier expects
    assert not set(driver.active()) & set(prod.active())
    assert store.lookup("545.00", "96.00.5e.00.01") == (driver, store.lookup(None, "96.00.5E.00.01")[1])


def test_real_evidence_against_real_rims():
    """The public H100 evidence (VBIOS 96.00.A5.00.01, driver 590.12) has no public RIM:
    the lookup fails (a validator refuses it: gpu_rim_unavailable). Compared with the
    RIMs of another VBIOS/driver, its signed measurements differ where expected."""
    entries = json.loads((VECTORS_DIR / "gpu" / "h100x8_evidence.json").read_text())
    entry = parse_gpu_entry(entries[0])
    store = RimStore.from_dir(RIMS)
    assert (entry.spdm.driver_version, entry.spdm.vbios_version) == ("590.12", "96.00.A5.00.01")
    assert store.lookup(entry.spdm.driver_version, entry.spdm.vbios_version) == (None, None)
    driver, vbios = store.lookup("545.00", "96.00.5E.00.01")
    bad = compare_rim(entry.spdm.blocks, [driver, vbios])
    assert bad and set(bad) <= set(driver.active()) | set(vbios.active())


def test_verifier_refuses_real_gpus_without_a_rim():
    quote = (VECTORS_DIR / "tdx" / "tdx_v4_quote.bin").read_bytes()
    gpus = json.loads((VECTORS_DIR / "gpu" / "h100x8_evidence.json").read_text())
    m = parse_quote(quote).report.measurements
    policy = Policy.default().with_profiles(MeasurementProfile("v4", m, "H100", 8))
    collateral = collateral_from_json((VECTORS_DIR / "tdx" / "tdx_v4_quote.collateral.json").read_text())
    verifier = Verifier(policy, StaticCollateralSource(collateral), rims=RimStore.from_dir(RIMS))
    verdict = verifier.verify(Evidence(quote, gpus), nonce=bytes.fromhex(gpus[0]["nonce"]),
                              e2e_pubkey=b"k", hotkey_ss58=HOTKEY, now=V4_NOW)
    assert "gpu_rim_unavailable" in verdict.reason_codes
    assert "96.00.A5.00.01" in next(r.message for r in verdict.reasons
                                    if r.code == "gpu_rim_unavailable")
    assert "gpu reference measurements (RIM) not checked" not in verdict.notes


# --- simulated GPUs against RIMs written for them --------------------------------------

NS = ('xmlns="http://standards.iso.org/iso/19770/-2/2015/schema.xsd" '
      'xmlns:ns2="http://www.w3.org/2001/04/xmlenc#sha384"')


def rim_xml(version: str, values: dict[int, list[bytes]], inactive: dict[int, bytes] | None = None,
            ) -> bytes:
    rows = []
    for index, alts in values.items():
        hashes = " ".join(f'ns2:Hash{k}="{a.hex()}"' for k, a in enumerate(alts))
        rows.append(f'<Resource type="Measurement" index="{index}" active="True" '
                    f'alternatives="{len(alts)}" {hashes} size="48"/>')
    for index, value in (inactive or {}).items():
        rows.append(f'<Resource type="Measurement" index="{index}" active="False" '
                    f'alternatives="1" ns2:Hash0="{value.hex()}" size="48"/>')
    return (f'<SoftwareIdentity {NS} name="GH100"><Meta colloquialVersion="{version}" '
            f'product="GH100"/><Payload>{"".join(rows)}</Payload></SoftwareIdentity>').encode()


def sim(index: int) -> bytes:
    return hashlib.sha384(DEV_SEED + b"/gpu-measurement/%d" % index).digest()


def _store(vbios: dict[int, list[bytes]], driver: dict[int, list[bytes]], **kw) -> RimStore:
    return RimStore([parse_rim(rim_xml("00.00.00.00.00", vbios, **kw)),
                     parse_rim(rim_xml("simulated", driver))])


def _verify(rims: RimStore | None, **provider_opts):
    provider = SimulatedProvider(seed=b"rim", gpu_count=2, **provider_opts)
    nonce = os.urandom(32)
    ev = provider.collect(nonce, b"pk", HOTKEY)
    v = Verifier(Policy.development(gpu_count=2), dangerous_accept_simulated_tee=True, rims=rims)
    return v.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)


def test_matching_rims_pass_and_any_alternative_counts():
    store = _store({1: [sim(1)], 2: [b"\x00" * 48, sim(2)]}, {3: [sim(3)], 4: [sim(4)]},
                   inactive={5: b"\x11" * 48})
    verdict = _verify(store)
    assert verdict.ok, verdict.reasons


def test_a_differing_measurement_is_refused_with_its_index():
    store = _store({1: [sim(1)], 2: [b"\x22" * 48]}, {3: [sim(3)], 4: [sim(4)]})
    verdict = _verify(store)
    assert verdict.reason_codes == ("gpu_rim_mismatch",)
    assert "indices 2" in verdict.reasons[0].message
    # a RIM activating an index the GPU did not measure is a mismatch too
    assert compare_rim([(1, b"\x01\x30\x00" + sim(1))], [parse_rim(rim_xml("x", {9: [sim(1)]}))]) == [9]


def test_missing_driver_or_vbios_rim_is_refused():
    only_vbios = RimStore([parse_rim(rim_xml("00.00.00.00.00", {1: [sim(1)]}))])
    assert _verify(only_vbios).reason_codes == ("gpu_rim_unavailable",)
    assert _verify(RimStore()).reason_codes == ("gpu_rim_unavailable",)


def test_devtools_and_cc_mode_claims():
    assert _verify(None, gpu_devtools=True).reason_codes == ("gpu_devtools_mode",)
    provider = SimulatedProvider(seed=b"cc", gpu_count=1)
    nonce = os.urandom(32)
    wire = provider.collect(nonce, b"pk", HOTKEY).to_wire()
    wire["gpu_evidence"][0]["cc_enabled"] = False
    v = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True)
    verdict = v.verify(Evidence.from_wire(wire), nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert verdict.reason_codes == ("gpu_cc_mode_off",)
    wire["gpu_evidence"][0]["cc_enabled"] = "yes"
    verdict = v.verify(Evidence.from_wire(wire), nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert verdict.reason_codes == ("gpu_evidence_format",)


@pytest.mark.parametrize("data, needle", [
    (b"<!DOCTYPE x [<!ENTITY a 'b'>]><x/>", "DTD"),
    (b"<x", "well-formed"),
    (b"<x/>", "SoftwareIdentity"),
    (rim_xml("1", {}), "no measurements"),
    (rim_xml("1", {1: [b"\x00" * 47]}), "SHA-384"),
    (rim_xml("1", {1: [b"\x00" * 48]}).replace(b'index="1"', b'index="x"'), "index"),
    (rim_xml("1", {1: [b"\x00" * 48]}).replace(b'colloquialVersion="1"', b""), "colloquialVersion"),
    (b"x" * (1 << 20 + 1), "at most"),
])
def test_malformed_rims_are_refused(data, needle):
    with pytest.raises(RimFormatError, match=needle):
        parse_rim(data)


def test_rim_directory_names_the_bad_file(tmp_path):
    (tmp_path / "good.swidtag").write_bytes(rim_xml("1", {1: [b"\x00" * 48]}))
    (tmp_path / "bad.swidtag").write_bytes(b"<x/>")
    with pytest.raises(RimFormatError, match=r"bad\.swidtag"):
        RimStore.from_dir(tmp_path)


def test_revocation_required_refuses_when_offline(tmp_path):
    def unreachable(url, body, timeout):
        raise OSError("network unreachable")
    checker = GpuOnlineChecker(tmp_path, url="http://127.0.0.1:9/", post=unreachable)
    provider = SimulatedProvider(seed=b"ocsp", gpu_count=1)
    nonce = os.urandom(32)
    ev = provider.collect(nonce, b"pk", HOTKEY)
    policy = Policy.development(gpu_count=1)
    lax = Verifier(policy, dangerous_accept_simulated_tee=True, gpu_online=checker)
    verdict = lax.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert verdict.ok and "gpu revocation check skipped (offline)" in verdict.notes
    strict = Verifier(policy, dangerous_accept_simulated_tee=True, gpu_online=checker,
                      require_revocation=True)
    verdict = strict.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert verdict.reason_codes == ("gpu_revocation_unchecked",)


def test_rim_type_is_frozen():
    rim = Rim("GH100", "1", "driver", {1: (True, (b"\x00" * 48,))})
    with pytest.raises(AttributeError):
        rim.version = "2"  # type: ignore[misc]
