"""The collateral server (PCCS / Intel PCS) becomes unreachable.

A validator fetched DCAP collateral once while the PCCS was up (recorded fetch of the
public v4 vector's collateral), and cached it on disk. Then it restarts with the PCCS
gone — a closed port, or a black hole that accepts nothing and answers nothing — using
the real network fetcher (dcap-qvl's HTTP client). Expected, through the full
:class:`Verifier` on the real quote:

* inside the collateral's validity window: the cached collateral is used, no network
  call is needed, DCAP passes (the vector then fails only its report_data binding,
  which is fixed by the public vector);
* after the window: a clear ``collateral_unavailable`` verdict, within the fetch
  timeout (the black hole cannot hang the validator).
"""

from __future__ import annotations

import socket
import time

import pytest

from chutes_subnet.attestation.fetch.pccs import PccsCollateralSource
from chutes_subnet.attestation.verify.collateral import collateral_window
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import MeasurementProfile, Policy
from chutes_subnet.attestation.verify.quote import parse_quote
from chutes_subnet.attestation.verify.verifier import Verifier
from tests.servers import free_port
from tests.vector_files import VECTORS_DIR

TDX = VECTORS_DIR / "tdx"
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
FETCH_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def quote() -> bytes:
    return (TDX / "tdx_v4_quote.bin").read_bytes()


@pytest.fixture(scope="module")
def collateral():
    return collateral_from_json((TDX / "tdx_v4_quote.collateral.json").read_text())


@pytest.fixture
def black_hole():
    """A listening socket that never accepts: connects succeed, nothing ever answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


#: a public quote verifies but was made by no miner: it measures no workload and binds
#: another challenge
NOT_OURS = ("workload_event_missing", "binding_mismatch")

def _verifier(source, quote: bytes) -> Verifier:
    m = parse_quote(quote).report.measurements
    policy = Policy.default().with_profiles(MeasurementProfile("public-v4", m, None, 0))
    return Verifier(policy, source)


def _verify(verifier: Verifier, quote: bytes, now: int):
    return verifier.verify(Evidence(quote, []), nonce=bytes(32), e2e_pubkey=b"k" * 1184,
                           hotkey_ss58=HOTKEY, now=now)


@pytest.mark.parametrize("pccs", ["closed", "black_hole"])
def test_unreachable_pccs_cached_collateral_inside_window_clear_failure_after(
        pccs, quote, collateral, black_hole, tmp_path):
    start, end = collateral_window(collateral)
    cache = tmp_path / "collateral"
    calls: list[str] = []

    def pccs_up(url: str, raw: bytes, timeout: float):
        calls.append(url)
        return collateral

    # while the PCCS was up: one fetch, written to the on-disk cache
    up = PccsCollateralSource("https://pccs.example", cache, fetch=pccs_up)
    assert _verify(_verifier(up, quote), quote, start).reason_codes == NOT_OURS
    assert calls == ["https://pccs.example"] and list(cache.glob("*.json"))

    # the validator restarts; the PCCS is gone; the real network fetcher is used
    url = f"http://127.0.0.1:{free_port()}" if pccs == "closed" else black_hole
    down = PccsCollateralSource(url, cache, timeout=FETCH_TIMEOUT)
    verifier = _verifier(down, quote)
    for now in (start, (start + end) // 2, end - 1):
        t0 = time.monotonic()
        verdict = _verify(verifier, quote, now)
        # DCAP passed on cached collateral; only what makes the vector not a miner's differs
        assert verdict.reason_codes == NOT_OURS, (now, verdict.to_dict())
        assert verdict.tcb_status == "UpToDate"
        assert time.monotonic() - t0 < FETCH_TIMEOUT  # no network attempt inside the window

    # past nextUpdate: a refetch is required and fails clearly, bounded by the timeout
    for now in (end, end + 86_400):
        t0 = time.monotonic()
        verdict = _verify(verifier, quote, now)
        took = time.monotonic() - t0
        assert verdict.reason_codes == ("collateral_unavailable",), verdict.to_dict()
        assert not verdict.ok
        assert "collateral fetch from PCCS/PCS failed" in verdict.to_dict()["reasons"][0]["message"]
        assert took < FETCH_TIMEOUT + 3, took
    assert calls == ["https://pccs.example"]  # the recorded PCCS was never asked again
