"""The report_data binding between a challenge, an instance's keys and a miner hotkey.

``report_data`` (64 bytes, chosen by the TD and signed inside the quote), by layout
version (:data:`BINDING_V1`, :data:`BINDING_V2`)::

    v1 (E2EE key only)
        report_data[0:32]  = SHA256(nonce || e2e_pubkey)
        report_data[32:64] = SHA256(nonce || hotkey_ss58 as UTF-8)

    v2 (E2EE key and receipt key; what instances produce now)
        report_data[0:32]  = SHA256("chutes-subnet report_data v2" || 0x00 || nonce
                                    || len(e2e_pubkey)[2 BE] || e2e_pubkey
                                    || len(receipt_pubkey)[2 BE] || receipt_pubkey)
        report_data[32:64] = SHA256(nonce || hotkey_ss58 as UTF-8)

The first half proves the keys the miner advertises were produced inside this TD for
this challenge: the ML-KEM-768 key clients encrypt to and, from v2, the Ed25519 key
that signs answer receipts (:mod:`chutes_subnet.receipts`). The second half pins
the enclave to one miner so another hotkey cannot present it. The label and length
prefixes make v2 digests disjoint from v1 ones, so a v1 binding never verifies as v2
(and the reverse). NVIDIA GPU evidence carries the 32-byte challenge nonce itself in
its SPDM request.
"""

from __future__ import annotations

import hashlib
import hmac

from chutes_subnet.wire.protocol import ATTEST_NONCE_BYTES

__all__ = [
    "BINDING_V1",
    "BINDING_V2",
    "binding_matches",
    "binding_version",
    "build_report_data",
    "constant_time_equal",
]

BINDING_V1 = 1
BINDING_V2 = 2
_V2_LABEL = b"chutes-subnet report_data v2\x00"


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, (bytes, bytearray)) or len(nonce) != ATTEST_NONCE_BYTES:
        raise ValueError(f"nonce must be {ATTEST_NONCE_BYTES} bytes")


def _check_key(name: str, key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or not key or len(key) > 0xFFFF:
        raise ValueError(f"{name} must be 1..65535 bytes")
    return bytes(key)


def binding_version(receipt_pubkey: bytes | None) -> int:
    """The layout an instance with (or without) a receipt key binds with."""
    return BINDING_V1 if receipt_pubkey is None else BINDING_V2


def build_report_data(nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                      receipt_pubkey: bytes | None = None) -> bytes:
    """The 64-byte report_data a TD must embed for this challenge (layouts above).

    Layout v2 when ``receipt_pubkey`` is given, v1 otherwise.
    """
    _check_nonce(nonce)
    pk = _check_key("e2e_pubkey", e2e_pubkey)
    if not isinstance(hotkey_ss58, str) or not hotkey_ss58:
        raise ValueError("hotkey_ss58 must be a non-empty string")
    if receipt_pubkey is None:
        key_half = hashlib.sha256(bytes(nonce) + pk).digest()
    else:
        rk = _check_key("receipt_pubkey", receipt_pubkey)
        key_half = hashlib.sha256(b"".join((
            _V2_LABEL, bytes(nonce), len(pk).to_bytes(2, "big"), pk,
            len(rk).to_bytes(2, "big"), rk))).digest()
    hotkey_half = hashlib.sha256(bytes(nonce) + hotkey_ss58.encode("utf-8")).digest()
    return key_half + hotkey_half


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """The project's one comparison helper for secrets and bindings."""
    return hmac.compare_digest(bytes(a), bytes(b))


def binding_matches(report_data: bytes, nonce: bytes, e2e_pubkey: bytes, hotkey_ss58: str,
                    receipt_pubkey: bytes | None = None) -> bool:
    """True iff ``report_data`` is exactly the binding of these values (v2 with a receipt key)."""
    try:
        expected = build_report_data(nonce, e2e_pubkey, hotkey_ss58, receipt_pubkey)
    except ValueError:
        return False
    return constant_time_equal(report_data, expected)
