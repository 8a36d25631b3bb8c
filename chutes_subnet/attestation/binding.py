"""The report_data binding between a challenge, an E2EE key and a miner hotkey.

``report_data`` (64 bytes, chosen by the TD and signed inside the quote)::

    report_data[0:32]  = SHA256(nonce || e2e_pubkey)
    report_data[32:64] = SHA256(nonce || hotkey_ss58 as UTF-8)

The first half proves the E2EE public key the miner advertises was produced inside
this TD for this challenge; the second half pins the enclave to one miner so another
hotkey cannot present it. NVIDIA GPU evidence carries the 32-byte challenge nonce
itself in its SPDM request.
"""

from __future__ import annotations

import hashlib
import hmac

from chutes_subnet.wire.protocol import ATTEST_NONCE_BYTES

__all__ = ["build_report_data", "binding_matches", "constant_time_equal"]


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != ATTEST_NONCE_BYTES:
        raise ValueError(f"nonce must be {ATTEST_NONCE_BYTES} bytes")


def build_report_data(nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> bytes:
    """The 64-byte report_data a TD must embed for this challenge (layout above)."""
    _check_nonce(nonce)
    if not isinstance(e2e_pubkey, (bytes, bytearray)) or not e2e_pubkey:
        raise ValueError("e2e_pubkey must be non-empty bytes")
    if not isinstance(hotkey_ss58, str) or not hotkey_ss58:
        raise ValueError("hotkey_ss58 must be a non-empty string")
    key_half = hashlib.sha256(bytes(nonce) + bytes(e2e_pubkey)).digest()
    hotkey_half = hashlib.sha256(bytes(nonce) + hotkey_ss58.encode("utf-8")).digest()
    return key_half + hotkey_half


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """The project's one comparison helper for secrets and bindings."""
    return hmac.compare_digest(bytes(a), bytes(b))


def binding_matches(report_data: bytes, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str) -> bool:
    """True iff ``report_data`` is exactly the binding of these three values."""
    try:
        expected = build_report_data(nonce, e2e_pubkey, hotkey_ss58)
    except ValueError:
        return False
    return constant_time_equal(report_data, expected)
