"""The tests mirror the package tree (README, "Tests"): a test of
``chutes_subnet/<sub>/<mod>.py`` lives in ``tests/<sub>/``, a test of a top-level
module ``chutes_subnet/<mod>.py`` is ``tests/test_<mod>[_<aspect>].py``, and
whole-system suites live in the few cross-cutting folders below."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGE = ROOT / "chutes_subnet"

# Suites that are about the system, not one module.
CROSS_CUTTING = {
    "security": "attacks and hardening across the stack",
    "faults": "killed, stalled and unreachable parts",
    "docs": "documents and code structure checked against the code",
    "e2e": "whole-system runs",
    "ops": "CLI, packaging, demo, deployment",
}
NOT_TESTS = {"data", "__pycache__"}


def subpackages() -> set[str]:
    return {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def top_level_modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def test_every_folder_mirrors_a_subpackage_or_is_cross_cutting() -> None:
    allowed = subpackages() | set(CROSS_CUTTING)
    assert not subpackages() & set(CROSS_CUTTING), "a cross-cutting name shadows a subpackage"
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name not in NOT_TESTS}
    stray = sorted(folders - allowed)
    assert not stray, f"tests/{stray[0]}/ is neither a chutes_subnet subpackage nor one of {sorted(CROSS_CUTTING)}"
    missing = sorted(f for f in folders if not (TESTS / f / "__init__.py").is_file())
    assert not missing, f"tests/{missing[0]}/ has no __init__.py (tests is a package)"


def root_test_module(name: str, modules: set[str]) -> str | None:
    """The top-level module a ``tests/test_*.py`` file is named for, if any."""
    stem = name.removeprefix("test_").removesuffix(".py")
    for mod in sorted(modules, key=len, reverse=True):
        if stem == mod or stem.startswith(mod + "_"):
            return mod
    return None


def test_root_test_files_test_a_top_level_module() -> None:
    modules = top_level_modules()
    stray = sorted(p.name for p in TESTS.glob("test_*.py") if root_test_module(p.name, modules) is None)
    assert not stray, (
        f"tests/{stray[0]} tests no top-level module: move it to tests/<subpackage>/ "
        f"or one of tests/{{{','.join(sorted(CROSS_CUTTING))}}}/"
    )


def test_the_root_rule_can_fail() -> None:
    modules = {"auth", "single_use"}
    assert root_test_module("test_auth.py", modules) == "auth"
    assert root_test_module("test_single_use_stores.py", modules) == "single_use"
    assert root_test_module("test_gateway_parts.py", modules) is None
    assert root_test_module("test_authority.py", modules) is None


def test_no_test_file_deeper_than_one_folder() -> None:
    deep = sorted(str(p.relative_to(TESTS)) for p in TESTS.glob("*/*/**/test_*.py")
                  if NOT_TESTS.isdisjoint(p.relative_to(TESTS).parts))
    assert not deep, f"tests/{deep[0]} is nested too deep: the tree mirrors chutes_subnet/<sub>/"
