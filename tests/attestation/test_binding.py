"""report_data layouts: v1 unchanged, v2 binds the receipt key, the two never cross."""

from __future__ import annotations

import hashlib

import pytest

from chutes_subnet.attestation.verify.binding import (
    BINDING_V1,
    BINDING_V2,
    binding_matches,
    binding_version,
    build_report_data,
)

NONCE = bytes(range(32))
PK = b"\x11" * 1184
RK = b"\x22" * 32
HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def test_v1_layout_is_unchanged() -> None:
    rd = build_report_data(NONCE, PK, HOTKEY)
    assert rd == hashlib.sha256(NONCE + PK).digest() + hashlib.sha256(NONCE + HOTKEY.encode()).digest()
    assert binding_version(None) == BINDING_V1


def test_v2_layout_binds_the_receipt_key() -> None:
    rd = build_report_data(NONCE, PK, HOTKEY, RK)
    key_half = hashlib.sha256(b"chutes-subnet report_data v2\x00" + NONCE + (1184).to_bytes(2, "big") + PK
                              + (32).to_bytes(2, "big") + RK).digest()
    assert rd == key_half + hashlib.sha256(NONCE + HOTKEY.encode()).digest()
    assert binding_version(RK) == BINDING_V2
    assert binding_matches(rd, NONCE, PK, HOTKEY, RK)


@pytest.mark.parametrize("nonce,pk,hotkey,rk", [
    (NONCE, PK, HOTKEY, b"\x23" * 32),      # another receipt key
    (NONCE, PK, HOTKEY, None),              # v2 evidence presented as v1 (receipt key dropped)
    (NONCE, b"\x12" * 1184, HOTKEY, RK),    # another E2EE key
    (bytes(32), PK, HOTKEY, RK),            # another challenge
    (NONCE, PK, HOTKEY[:-1] + "Z", RK),     # another hotkey
])
def test_v2_binding_refuses_any_other_value(nonce, pk, hotkey, rk) -> None:
    assert not binding_matches(build_report_data(NONCE, PK, HOTKEY, RK), nonce, pk, hotkey, rk)


def test_v1_binding_never_verifies_as_v2() -> None:
    assert not binding_matches(build_report_data(NONCE, PK, HOTKEY), NONCE, PK, HOTKEY, RK)


@pytest.mark.parametrize("rk", [b"", b"x" * 70000, "not-bytes"])
def test_malformed_receipt_key_is_refused(rk) -> None:
    with pytest.raises(ValueError):
        build_report_data(NONCE, PK, HOTKEY, rk)
    assert not binding_matches(bytes(64), NONCE, PK, HOTKEY, rk)


def test_report_data_layout_v1_is_two_hashes():
    import hashlib
    nonce = bytes(range(32))
    rd = build_report_data(nonce, b"pk", "5abc")
    assert rd == hashlib.sha256(nonce + b"pk").digest() + hashlib.sha256(nonce + b"5abc").digest()
    with pytest.raises(ValueError):
        build_report_data(b"short", b"pk", "5abc")
