"""Secrets are compared in constant time.

Two checks:

1. a static scan of ``chutes_subnet/`` for ``==``/``!=`` where an operand is named like
   a secret (digest, MAC, tag, signature, report_data, binding, key hash, nonce, ...):
   there must be none outside the reviewed allowlist below;
2. a runtime spy proving the places that *do* compare secrets (API key hash, nonce
   scope, report_data binding, GPU nonce, pinned roots) call ``compare_digest``.

Lookups keyed by a SHA-256 digest of a 256-bit secret (the in-memory API key store)
are not comparisons of attacker-guessable prefixes and are documented in
docs/security.md.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import hmac
import re
import secrets
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "chutes_subnet"
#: identifier parts that mark a value as secret or as a cryptographic binding
SECRET = re.compile(r"(^|_)(digest|hexdigest|mac|hmac|tag|secret|signature|sig|report_data|"
                    r"binding|key_hash|password|mnemonic|private|shared|nonce|token_hash)($|_)",
                    re.IGNORECASE)
#: (file relative to the package, source of the comparison) -> why it is not a secret compare
ALLOWED: dict[tuple[str, str], str] = {
    ("attestation/verify/quote.py", "s.pos + cert_size != sig_end"): "byte offsets, not secrets",
    ("attestation/verify/rim.py", "root.tag != _ROOT_TAG"): "an XML element name, not a MAC tag",
}
_HARMLESS_CALLS = {"len", "type", "isinstance", "int", "bool"}


def _operand_names(node: ast.expr) -> list[str]:
    """Identifiers that name ``node``'s value (not its arguments or indices)."""
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name) and func.id in _HARMLESS_CALLS:
            return []
        return _operand_names(func) if isinstance(func, ast.Attribute) else \
            ([func.id] if isinstance(func, ast.Name) else [])
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Subscript):
        return _operand_names(node.value)
    return []


def secret_comparisons(source: str) -> list[tuple[int, str]]:
    """(line, source) of every ``==``/``!=`` whose operand looks like a secret."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(isinstance(o, ast.Constant) and (o.value is None or isinstance(o.value, (int, bool)))
               for o in operands):
            continue
        names = [n for o in operands for n in _operand_names(o)]
        if any(SECRET.search(n) and not n.isupper() for n in names):
            found.append((node.lineno, ast.get_source_segment(source, node) or ""))
    return found


def test_scanner_flags_plain_secret_comparisons() -> None:
    """The scanner can fail: these must be flagged, the safe forms must not."""
    bad = ("if digest == expected:\n    pass\n"
           "ok = request.signature != sig\n"
           "same = quote.report.report_data == build()\n"
           "m = h.hexdigest() == other\n")
    good = ("if hmac.compare_digest(digest, expected):\n    pass\n"
            "if len(nonce) != 32:\n    pass\n"
            "if tag is None or nonce == None:\n    pass\n"
            "if SIGNATURE_LEN == 96:\n    pass\n")
    assert [line for line, _ in secret_comparisons(bad)] == [1, 3, 4, 5]
    assert secret_comparisons(good) == []


def test_no_secret_is_compared_with_eq_in_the_package() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        for line, src in secret_comparisons(path.read_text(encoding="utf-8")):
            if (rel, src) not in ALLOWED:
                offenders[f"{rel}:{line}"] = src
    assert offenders == {}


@pytest.fixture
def spy(monkeypatch) -> list[tuple[bytes | str, bytes | str]]:
    calls: list[tuple[bytes | str, bytes | str]] = []
    real = hmac.compare_digest

    def recording(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    monkeypatch.setattr(secrets, "compare_digest", recording)
    return calls


def test_report_data_binding_uses_compare_digest(spy) -> None:
    from chutes_subnet.attestation.verify.binding import binding_matches, build_report_data

    rd = build_report_data(bytes(32), b"pk", "5Hot")
    assert binding_matches(rd, bytes(32), b"pk", "5Hot")
    assert not binding_matches(rd, bytes(32), b"pk", "5Other")
    assert len(spy) == 2 and all(len(a) == 64 for a, _ in spy)


def test_sqlite_api_key_check_uses_compare_digest(spy, tmp_path) -> None:
    from chutes_subnet.errors import AuthenticationError
    from chutes_subnet.gateway.api_keys import SQLiteApiKeyStore, hash_key

    store = SQLiteApiKeyStore(tmp_path / "keys.db", cache_seconds=0.0)
    secret, rec = store.create("app")
    assert store.authenticate(secret).key_id == rec.key_id
    assert spy and spy[-1][1] == hash_key(secret)
    with pytest.raises(AuthenticationError):
        store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    store.close()


def test_nonce_scope_check_uses_compare_digest(spy) -> None:
    from chutes_subnet.nonces import MemoryNonceStore, NonceScope
    from chutes_subnet.single_use import Use

    async def run() -> None:
        store = MemoryNonceStore()
        scope = NonceScope("key-1", "chute", "inst")
        nonce = (await store.issue(scope, 1))[0]
        assert await store.consume(nonce, NonceScope("key-2", "chute", "inst")) is Use.SCOPE
        assert await store.consume(nonce, scope) is Use.ACCEPTED

    asyncio.run(run())
    assert len(spy) == 2


def test_gpu_nonce_check_uses_compare_digest(spy) -> None:
    from chutes_subnet.attestation.simulator.device import SimulatedDevice
    from chutes_subnet.attestation.verify.binding import build_report_data
    from chutes_subnet.attestation.verify.evidence import Evidence
    from chutes_subnet.attestation.verify.policy import Policy
    from chutes_subnet.attestation.verify.simulated_tee import dev_gpu_root_der
    from chutes_subnet.attestation.verify.verifier import Verifier

    device = SimulatedDevice(b"\x01" * 32, gpu_count=1)
    nonce, pk, hotkey = bytes(range(32)), b"k" * 1184, "5Hot"
    ev = Evidence(device.quote(build_report_data(nonce, pk, hotkey)), device.gpu_evidence(nonce),
                  simulated=True)
    verdict = Verifier(Policy.development(gpu_count=1), dangerous_accept_simulated_tee=True) \
        .verify(ev, nonce=nonce, e2e_pubkey=pk, hotkey_ss58=hotkey)
    assert verdict.ok, verdict.reasons
    compared = {bytes(a) if isinstance(a, (bytes, bytearray)) else a for a, _ in spy}
    assert nonce in compared  # the GPU's signed request nonce
    assert build_report_data(nonce, pk, hotkey) in compared  # the report_data binding
    assert hashlib.sha256(dev_gpu_root_der()).digest() in compared  # the pinned GPU root
