"""docs/protocol.md against the code: the facts the page states are recomputed here.

When a constant, label, header or byte layout changes in the code, one of these
tests fails until the page is updated.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from chutes_subnet.attestation.verify.binding import build_report_data
from chutes_subnet.e2ee import PADDING_NONE, PADDING_PADME, KeyPair, RequestContext, _kem, v1, v2
from chutes_subnet.gateway.invoke_relay import NONCE_REFUSALS
from chutes_subnet.nonces import SeenNonceCache, new_nonce
from chutes_subnet.single_use import Use
from chutes_subnet.wire import headers, protocol

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


def _section(title_start: str) -> str:
    start = DOC.index(title_start)
    nxt = DOC.find("\n## ", start + 1)
    return DOC[start: nxt if nxt != -1 else len(DOC)]


@pytest.mark.parametrize("name", sorted(n for n in dir(headers) if n.startswith("H_")))
def test_every_protocol_header_is_documented(name: str) -> None:
    assert f"`{getattr(headers, name)}`" in DOC


def test_usage_header_bound_is_the_documented_one() -> None:
    assert headers.MAX_USAGE_TOKENS == 2**40 and "2^40" in DOC
    assert f"{headers.MAX_USAGE_HEADER_CHARS} characters" in DOC


def test_every_wire_module_is_in_the_file_table() -> None:
    from chutes_subnet import wire

    root = Path(wire.__file__).parent
    for mod in sorted(root.glob("*.py")):
        if mod.name != "__init__.py":
            assert f"`chutes_subnet/wire/{mod.name}`" in DOC, mod.name


def test_invoke_paths_and_versions_are_documented() -> None:
    for path in protocol.INVOKE_PATHS:
        assert path in DOC
    assert protocol.SUPPORTED_E2EE_VERSIONS == (1, 2)


def test_limits_table_matches_protocol_constants() -> None:
    limits = _section("## 11. Limits")
    assert protocol.MAX_ENVELOPE_BYTES == 4 * 1024 * 1024 and "| 4 MiB |" in limits
    assert protocol.MAX_DECOMPRESSED_BYTES == 16 * 1024 * 1024 and "| 16 MiB |" in limits
    assert protocol.MAX_ATTEST_BODY_BYTES == 4 * 1024 and "| 4 KiB |" in limits
    assert f"| {protocol.ATTEST_NONCE_BYTES} |" in limits
    assert f"| {protocol.NONCE_TTL_SERVER_SECONDS} / {protocol.NONCE_TTL_CLIENT_SECONDS} |" in limits


def test_chute_namespace_is_the_documented_one() -> None:
    assert protocol.CHUTE_NAMESPACE in DOC


def test_kem_sizes_are_the_documented_ones() -> None:
    assert (_kem.PUBLIC_KEY_SIZE, _kem.CIPHERTEXT_SIZE, _kem.SHARED_SECRET_SIZE) == (1184, 1088, 32)
    assert "public key 1184 B, ciphertext 1088 B, shared secret 32 B" in DOC


def test_v1_labels_and_layout() -> None:
    for label in (v1.INFO_REQ, v1.INFO_RESP, v1.INFO_STREAM):
        assert f'"{label.decode()}"' in DOC
    kp = KeyPair.generate()
    body, _ = v1.seal_request(kp.public_bytes, {"model": "m"})
    # kem_ct (1088) || nonce (12) || ciphertext || tag (16): the instance opens it
    payload, response_pk = v1.open_request(kp, body)
    assert payload == {"model": "m"} and len(response_pk) == 1184
    assert "1088    12     aead_nonce" in DOC


def test_v2_aad_example_is_byte_exact() -> None:
    documented = re.search(r"`RequestContext\(\"a\", \"b\", \"c\", \"/v1/completions\", False\)"
                           r"\.aad\(\)` is, in hex,\s*`([0-9a-f ]+)`", DOC)
    assert documented, "the AAD example is missing from docs/protocol.md"
    expected = RequestContext("a", "b", "c", "/v1/completions", False).aad().hex()
    assert documented.group(1).replace(" ", "") == expected


def test_v2_labels_and_version_byte() -> None:
    from chutes_subnet.e2ee import v2 as v2mod
    from chutes_subnet.wire import context

    assert f'"{context.AAD_LABEL.decode()}"' in DOC
    for label in (v2mod._LABEL_REQ, v2mod._LABEL_RESP, v2mod._LABEL_STREAM):
        assert f'"{label.decode()}"' in DOC
    kp = KeyPair.generate()
    ctx = RequestContext("chute", "inst", new_nonce(), "/v1/chat/completions", True)
    body, _ = v2.seal_request(kp.public_bytes, ctx, {"model": "m"})
    assert body[:1] == b"\x02" and "0       1      0x02" in DOC


def test_v2_stream_frames_carry_no_nonce_as_documented() -> None:
    kp = KeyPair.generate()
    line = b'data: {"x":1}'
    for padding, size in ((PADDING_NONE, len(line)), (PADDING_PADME, 512)):
        ctx = RequestContext("chute", "inst", new_nonce(), "/v1/chat/completions", True, padding)
        body, client = v2.seal_request(kp.public_bytes, ctx, {"model": "m"})
        _, server = v2.open_request(kp, ctx, body)
        sealer, opener = server.stream_sealer(), client.stream_opener()
        frame = sealer.seal(line)
        assert len(base64.b64decode(frame)) == size + 16  # ciphertext || tag only
        assert opener.open(frame) == line
        final = opener.open_final(sealer.finish({"completion_tokens": 1}))
        assert final == {"chunks": 1, "usage": {"completion_tokens": 1}}
    assert '{"chunks": n, "usage": {…} or null}' in DOC
    assert "multiple of 512 bytes" in DOC


def test_nonce_refusal_table_matches_the_gateway() -> None:
    section = _section("## 4. Nonces")
    for use, (status, code, _) in NONCE_REFUSALS.items():
        assert f"`{use.value}`" in section and f"{status} `{code}`" in section


def test_report_data_layout_is_the_documented_one() -> None:
    import hashlib

    nonce, pk, hotkey = bytes(range(32)), b"\x01" * 1184, "5Hotkey"
    rd = build_report_data(nonce, pk, hotkey)
    assert rd[:32] == hashlib.sha256(nonce + pk).digest()
    assert rd[32:] == hashlib.sha256(nonce + hotkey.encode()).digest()
    assert "report_data[0:32]  = SHA256(nonce[32] ‖ e2e_pubkey[1184])" in DOC
    assert "report_data[32:64] = SHA256(nonce[32] ‖ UTF-8(hotkey_ss58))" in DOC


def test_btauth_defaults_are_the_documented_ones() -> None:
    from bittensor import http_auth

    assert (http_auth.DEFAULT_MAX_AGE, http_auth.DEFAULT_ALLOWED_SKEW) == (10.0, 2.0)
    assert "at most 10 s old and\n   at most 2 s in the future" in DOC
    for header in ("X-Bittensor-Version", "X-Bittensor-Hotkey", "X-Bittensor-Receiver",
                   "X-Bittensor-Nonce", "X-Bittensor-Signature", "X-Bittensor-Crypto"):
        assert f"`{header}" in DOC


def test_replay_cache_refuses_a_second_use_as_documented() -> None:
    cache = SeenNonceCache(ttl=90)
    assert cache.consume("n:abc") is Use.ACCEPTED
    assert cache.consume("n:abc") is Use.USED
    assert "409 `replayed`" in DOC
