"""The tests mirror the package tree (README, "Development"): a test of
``chutes_subnet/<sub>/<mod>.py`` lives in ``tests/<sub>/`` (a nested subpackage in the
matching nested folder), a test of a top-level module ``chutes_subnet/<mod>.py`` is
``tests/test_<mod>[_<aspect>].py``, and suites about the whole system live in the few
cross-cutting folders below."""

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


def folders_below(root: Path = TESTS) -> list[tuple[str, ...]]:
    """Every folder below ``root`` that may hold tests, as path parts."""
    return sorted(p.relative_to(root).parts for p in root.rglob("*") if p.is_dir()
                  and not any(part in NOT_TESTS or part.startswith(".")
                              for part in p.relative_to(root).parts))


def stray_folder(parts: tuple[str, ...], package: Path = PACKAGE) -> bool:
    """Neither cross-cutting nor the mirror of a (sub)package of chutes_subnet."""
    return parts[0] not in CROSS_CUTTING and not (package.joinpath(*parts) / "__init__.py").is_file()


def test_every_folder_mirrors_a_subpackage_or_is_cross_cutting() -> None:
    assert not subpackages() & set(CROSS_CUTTING), "a cross-cutting name shadows a subpackage"
    folders = folders_below()
    stray = ["/".join(f) for f in folders if stray_folder(f)]
    assert not stray, (f"tests/{stray[0]}/ mirrors no package of chutes_subnet/ and is none of "
                       f"{sorted(CROSS_CUTTING)}")
    missing = ["/".join(f) for f in folders if not TESTS.joinpath(*f, "__init__.py").is_file()]
    assert not missing, f"tests/{missing[0]}/ has no __init__.py (tests is a package)"


def test_the_folder_rule_can_fail(tmp_path: Path) -> None:
    (tmp_path / "wire" / "deep").mkdir(parents=True)
    (tmp_path / "wire" / "__init__.py").touch()
    assert not stray_folder(("wire",), tmp_path)
    assert stray_folder(("wire", "deep"), tmp_path)  # no such subpackage
    assert stray_folder(("misc",), tmp_path)
    assert not stray_folder(("e2e",), tmp_path)


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


def test_the_default_run_keeps_slow_tests_and_leaves_out_load() -> None:
    """CI runs ``python -m pytest -q``: ``slow`` tests are in it, ``load`` and ``localnet``
    (bench-sized, or needing a live devnet) are not."""
    import shlex
    import tomllib

    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    args = shlex.split(ini["addopts"])
    expr = args[args.index("-m") + 1]
    assert expr == "not localnet and not load", expr
    assert {m.split(":")[0] for m in ini["markers"]} == {"slow", "load", "localnet"}
    assert "--strict-markers" in args
