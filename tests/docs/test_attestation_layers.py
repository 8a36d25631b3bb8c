"""chutes_subnet/attestation/ keeps its four jobs apart (docs/attestation.md, "Where the
code is"): ``verify`` is pure and imports no other part; ``fetch`` (network) and
``providers`` (miner devices) and ``simulator`` build on ``verify``; no package
re-exports. Read from the source (``ast``), including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.docs.test_import_cycles import PACKAGE, import_graph

ATT = "chutes_subnet.attestation"
#: What a pure verifier may import from the rest of chutes_subnet
VERIFY_MAY_USE = {"chutes_subnet", "chutes_subnet.errors", "chutes_subnet.wire",
                  "chutes_subnet.wire.protocol", "chutes_subnet.single_use", ATT}
#: Modules that reach the network, devices or other processes
IO_MODULES = {"socket", "ssl", "http", "urllib", "httpx", "requests", "aiohttp", "asyncio",
              "subprocess", "fcntl", "sqlite3", "redis", "tempfile", "shutil"}


def _edges() -> dict[str, set[str]]:
    return import_graph(PACKAGE, deferred=True)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and module.startswith(ATT + ".") else None


def _top_level_imports(path: Path) -> set[str]:
    """Every absolute module an ``import`` in ``path`` names (also inside functions,
    not under ``if TYPE_CHECKING:``)."""
    from tests.docs.test_import_cycles import _all_imports

    found: set[str] = set()
    for node in _all_imports(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif node.level == 0 and node.module:
            found.add(node.module)
    return found


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    allowed = {"verify": {"verify"}, "fetch": {"fetch", "verify"},
               "providers": {"providers", "verify"},
               "simulator": {"simulator", "providers", "verify"}}
    bad = []
    for mod, targets in sorted(edges.items()):
        layer = _layer(mod)
        if layer not in allowed:
            continue
        for target in sorted(targets):
            other = _layer(target)
            if other is not None and other not in allowed[layer]:
                if not (mod == f"{ATT}.providers.choose" and other == "simulator"):
                    bad.append(f"{mod} -> {target}")
            elif other is None and target.startswith("chutes_subnet") and layer == "verify" \
                    and target not in VERIFY_MAY_USE:
                bad.append(f"{mod} -> {target}")
    return bad


def test_parts_import_only_downwards() -> None:
    edges = _edges()
    assert any(_layer(m) == "verify" for m in edges), "no attestation/verify modules found"
    assert layer_violations(edges) == []


def test_verify_does_no_io() -> None:
    offenders = []
    for path in sorted((PACKAGE / "attestation" / "verify").glob("*.py")):
        for name in _top_level_imports(path):
            if any(name == m or name.startswith(m + ".") for m in IO_MODULES):
                offenders.append(f"{path.name} imports {name}")
    assert offenders == []


def test_attestation_packages_re_export_nothing() -> None:
    inits = sorted((PACKAGE / "attestation").rglob("__init__.py"))
    assert len(inits) == 5
    for init in inits:
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert all(isinstance(s, ast.Expr) for s in body), f"{init} should hold only its docstring"


def test_the_layer_rule_can_fail() -> None:
    edges = {f"{ATT}.verify.verifier": {f"{ATT}.fetch.ocsp_client", "chutes_subnet.gateway.app"},
             f"{ATT}.fetch.pccs": {f"{ATT}.providers.qgs"},
             f"{ATT}.providers.choose": {f"{ATT}.simulator.device"},
             f"{ATT}.simulator.device": {f"{ATT}.verify.quote", f"{ATT}.providers.rtmr"}}
    assert layer_violations(edges) == [
        f"{ATT}.fetch.pccs -> {ATT}.providers.qgs",
        f"{ATT}.verify.verifier -> {ATT}.fetch.ocsp_client",
        f"{ATT}.verify.verifier -> chutes_subnet.gateway.app",
    ]
