"""Policy files, challenges, binding, collateral cache, providers, development mode."""

from __future__ import annotations

import os
import threading

import pytest

from chutes_subnet.attestation.fetch.pccs import PccsCollateralSource
from chutes_subnet.attestation.providers.choose import make_provider
from chutes_subnet.attestation.simulator.simulated_provider import SimulatedProvider
from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.attestation.verify.challenges import ChallengeBook
from chutes_subnet.attestation.verify.collateral import StaticCollateralSource
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import EvidenceFacts, Policy, measure_simulated_profile
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.errors import AttestationError, CollateralError, PolicyFileError
from chutes_subnet.single_use import Use
from tests.vector_files import VECTORS_DIR as VECTORS

HOTKEY, NOW = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty", 1_760_000_000


def test_report_data_layout():
    import hashlib
    nonce = bytes(range(32))
    rd = build_report_data(nonce, b"pk", "5abc")
    assert rd == hashlib.sha256(nonce + b"pk").digest() + hashlib.sha256(nonce + b"5abc").digest()
    with pytest.raises(ValueError):
        build_report_data(b"short", b"pk", "5abc")


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


# --- challenges ----------------------------------------------------------------------

def test_challenge_book_single_use_and_expiry():
    now = [100.0]
    book = ChallengeBook(ttl=60, clock=lambda: now[0])
    a, b = book.issue(), book.issue()
    assert len(a) == 32 and a != b
    assert book.consume(a) is Use.ACCEPTED and book.consume(a) is Use.UNKNOWN
    now[0] += 61
    assert book.consume(b) is Use.EXPIRED
    assert book.consume(os.urandom(32)) is Use.UNKNOWN and book.consume(b"x") is Use.UNKNOWN


def test_challenge_book_is_thread_safe():
    book = ChallengeBook()
    nonce = book.issue()
    wins = []
    threads = [threading.Thread(target=lambda: wins.append(book.consume(nonce).ok))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_verifier_consumes_challenges():
    book = ChallengeBook()
    nonce = book.issue()
    ev = SimulatedProvider(seed=b"s").collect(nonce, b"pk", HOTKEY)
    v = Verifier(Policy.development(), dangerous_accept_simulated_tee=True, challenges=book)
    assert v.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY).ok
    again = v.verify(ev, nonce=nonce, e2e_pubkey=b"pk", hotkey_ss58=HOTKEY)
    assert again.reason_codes == ("nonce_unknown_or_used",)


# --- simulated / development mode ---------------------------------------------------

@pytest.fixture(scope="module")
def dev_verifier():
    return Verifier(Policy.development(), dangerous_accept_simulated_tee=True)


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


def test_make_provider():
    assert isinstance(make_provider("simulated", gpu_count=1), SimulatedProvider)
    with pytest.raises(AttestationError, match="TDX"):
        make_provider("tdx", tsm_dir="/nonexistent/tsm/report")
    with pytest.raises(AttestationError, match="unknown"):
        make_provider("sgx")


def test_verifier_never_raises_on_garbage(dev_verifier):
    for ev in (Evidence(b"", []), Evidence(b"\x04\x00" * 40, [{"a": 1}]), "not evidence"):
        verdict = dev_verifier.verify(ev, nonce=bytes(32), e2e_pubkey=b"k", hotkey_ss58=HOTKEY)  # type: ignore[arg-type]
        assert not verdict.ok and verdict.reasons
    assert dev_verifier.verify(Evidence(b"x", []), nonce=b"1", e2e_pubkey=b"k",
                               hotkey_ss58=HOTKEY).reason_codes == ("nonce_invalid",)


# --- collateral ----------------------------------------------------------------------

def test_pccs_cache_respects_validity_window(tmp_path):
    quote = (VECTORS / "tdx" / "tdx_v4_quote.bin").read_bytes()
    text = (VECTORS / "tdx" / "tdx_v4_quote.collateral.json").read_text()
    calls = []

    def fetch(url, raw, timeout):
        calls.append(url)
        return collateral_from_json(text)

    src = PccsCollateralSource("https://pccs.example/", tmp_path, fetch=fetch)
    t = 1751624191
    src.get(quote, t)
    src.get(quote, t + 10)
    assert calls == ["https://pccs.example"]
    assert (tmp_path / "B0C06F000000-platform.json").exists()
    fresh = PccsCollateralSource("https://pccs.example", tmp_path, fetch=fetch)
    fresh.get(quote, t)  # served from disk
    assert len(calls) == 1
    with pytest.raises(CollateralError, match="not valid"):
        fresh.get(quote, 1752919235 + 1)  # past nextUpdate: refetch, still stale
    assert len(calls) == 2


def test_missing_collateral_source_is_a_reason():
    quote = (VECTORS / "tdx" / "tdx_v4_quote.bin").read_bytes()
    v = Verifier(Policy.default())
    assert v.verify(Evidence(quote, []), nonce=bytes(32), e2e_pubkey=b"k", hotkey_ss58=HOTKEY
                    ).reason_codes == ("collateral_unavailable",)
    with pytest.raises(CollateralError):
        collateral_from_json("{not json")
