"""DCAP collateral: the PCCS source caches within the validity window (memory and disk) and
refetches after it; no collateral source is a reason, not an exception."""

from __future__ import annotations

import pytest

from chutes_subnet.attestation.fetch.pccs import PccsCollateralSource
from chutes_subnet.attestation.verify.dcap import collateral_from_json
from chutes_subnet.attestation.verify.evidence import Evidence
from chutes_subnet.attestation.verify.policy import Policy
from chutes_subnet.attestation.verify.verifier import Verifier
from chutes_subnet.errors import CollateralError
from tests.vector_files import VECTORS_DIR as VECTORS

HOTKEY = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


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
