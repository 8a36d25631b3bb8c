"""docs/architecture.md's package map against the package: every module is listed,
and every listed module exists (like test_protocol.py does for protocol.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chutes_subnet"
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def _map_rows() -> list[str]:
    start = DOC.index("## Package map")
    end = DOC.find("\n## ", start + 1)
    section = DOC[start: end if end != -1 else len(DOC)]
    return [line.split("|")[1] for line in section.splitlines()
            if line.startswith("| `")]


def documented() -> set[str]:
    """Module paths relative to the package. In one cell, a name without a directory
    shares the directory of the name before it (``inference/model.py``, ``generation.py``)."""
    out: set[str] = set()
    for cell in _map_rows():
        folder = ""
        for name in re.findall(r"`([^`]+)`", cell):
            name = name.removeprefix("chutes_subnet/")
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/"
                out.add(name)
            else:
                out.add(folder + name)
    return {p for p in out if p.endswith(".py")}


def modules() -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
            if p.name not in ("__init__.py", "__main__.py")}


def test_every_module_is_in_the_package_map() -> None:
    missing = sorted(modules() - documented())
    assert missing == [], f"add to docs/architecture.md's package map: {missing}"


def test_every_mapped_module_exists() -> None:
    stale = sorted(documented() - modules())
    assert stale == [], f"docs/architecture.md lists modules that do not exist: {stale}"
