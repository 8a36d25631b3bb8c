"""Verified certificate links remembered across GPU evidence checks (real H100 vectors):
fewer signature checks, the same verdicts, and nothing time-dependent cached."""

from __future__ import annotations

import json

import pytest

from chutes_subnet.attestation.verify import gpu as gpu_mod
from chutes_subnet.attestation.verify._linkcache import SHARED_LINKS, VerifiedLinkCache
from chutes_subnet.attestation.verify.gpu import (
    nvidia_root_der,
    parse_gpu_entry,
    verify_gpu_evidence,
)
from chutes_subnet.attestation.verify.reasons import ReasonCode
from tests.vector_files import VECTORS_DIR

V4_NOW = 1751624191  # inside the vectors' certificate validity (tests/attestation/test_vectors.py)


@pytest.fixture(scope="module")
def entries() -> list:
    raw = json.loads((VECTORS_DIR / "gpu" / "h100x8_evidence.json").read_text())
    return [parse_gpu_entry(e) for e in raw]


@pytest.fixture(scope="module")
def nonce() -> bytes:
    raw = json.loads((VECTORS_DIR / "gpu" / "h100x8_evidence.json").read_text())
    return bytes.fromhex(raw[0]["nonce"])


def _count_signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = gpu_mod.x509.Certificate.verify_directly_issued_by

    def counting(self, issuer):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(self, issuer)

    monkeypatch.setattr(gpu_mod.x509.Certificate, "verify_directly_issued_by", counting)
    return calls


def test_second_round_skips_links_already_verified(entries, nonce, monkeypatch) -> None:
    try:
        calls = _count_signature_checks(monkeypatch)
    except TypeError:  # a Rust type whose methods cannot be patched: count via cache size
        calls = None
    cache = VerifiedLinkCache()
    first = verify_gpu_evidence(entries, nonce, root_der=nvidia_root_der(), now=V4_NOW,
                                link_cache=cache)
    links = len(cache)
    assert first.count == 8 and first.reasons == () and links > 0
    before = calls[0] if calls else 0
    again = verify_gpu_evidence(entries, nonce, root_der=nvidia_root_der(), now=V4_NOW,
                                link_cache=cache)
    assert again == first and len(cache) == links
    if calls:
        assert calls[0] == before  # every link of the second round came from the cache


def test_validity_is_checked_even_for_cached_links(entries, nonce) -> None:
    cache = VerifiedLinkCache()
    assert verify_gpu_evidence(entries, nonce, root_der=nvidia_root_der(), now=V4_NOW,
                               link_cache=cache).count == 8
    later = verify_gpu_evidence(entries, nonce, root_der=nvidia_root_der(),
                                now=946684800, link_cache=cache)  # 2000: before notBefore
    assert later.count == 0
    assert {r.code for r in later.reasons} == {ReasonCode.GPU_CERT_CHAIN_INVALID.value}


def test_a_forged_link_is_never_cached(entries, nonce) -> None:
    cache = VerifiedLinkCache()
    leaf, issuer = entries[0].chain_der[0], entries[0].chain_der[1]
    forged = bytearray(leaf)
    forged[-10] ^= 0x01  # inside the signature
    bad = [gpu_mod.GpuEvidenceEntry(entries[0].arch, (bytes(forged), *entries[0].chain_der[1:]),
                                    entries[0].spdm, entries[0].claimed_nonce,
                                    entries[0].claimed_driver, entries[0].claimed_vbios)]
    for _ in range(2):
        result = verify_gpu_evidence(bad, nonce, root_der=nvidia_root_der(), now=V4_NOW,
                                     link_cache=cache)
        assert result.count == 0 and result.reasons
    assert (bytes(forged), issuer) not in cache


def test_the_cache_is_bounded_and_keyed_by_both_certificates() -> None:
    cache = VerifiedLinkCache(maxsize=2)
    cache.add((b"a", b"root"))
    cache.add((b"b", b"root"))
    assert (b"a", b"root") in cache  # touched: now most recent
    cache.add((b"c", b"root"))
    assert (b"b", b"root") not in cache and (b"a", b"root") in cache and len(cache) == 2
    assert (b"a", b"other issuer") not in cache
    assert "not a link" not in cache
    with pytest.raises(ValueError):
        VerifiedLinkCache(maxsize=0)


def test_shared_cache_is_the_default() -> None:
    assert verify_gpu_evidence.__kwdefaults__["link_cache"] is SHARED_LINKS
