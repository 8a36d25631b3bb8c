"""No two package modules share a file name unless the name is a per-role convention.

A module's file name should say what it does: two ``attest.py`` (a client's challenge,
a gateway relay, a miner endpoint, a validator's attestor) read alike in tracebacks,
logs and search results while doing different things. Exempt are the entry modules
every role package has in the same sense, where the package name already says whose
it is: ``__init__``/``__main__`` (Python's own), ``cli`` (that role's command line),
``config`` (its settings dataclass), ``app`` (its ASGI application), ``state`` (its
persistent state) and ``metrics`` (its Prometheus registry and metrics endpoint)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "chutes_subnet"
PER_ROLE = {"__init__", "__main__", "cli", "config", "app", "state", "metrics"}


def shared_names(paths: list[Path], root: Path) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        if path.stem not in PER_ROLE:
            seen[path.name].append(path.relative_to(root).as_posix())
    return {name: sorted(where) for name, where in sorted(seen.items()) if len(where) > 1}


def test_no_two_modules_share_a_file_name() -> None:
    found = shared_names(sorted(PACKAGE.rglob("*.py")), PACKAGE)
    assert found == {}, f"modules sharing a file name (rename to what each does): {found}"


def test_the_name_rule_can_fail(tmp_path: Path) -> None:
    for rel in ("a/attest.py", "b/attest.py", "a/cli.py", "b/cli.py", "c/only.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    found = shared_names(sorted(tmp_path.rglob("*.py")), tmp_path)
    assert found == {"attest.py": ["a/attest.py", "b/attest.py"]}
