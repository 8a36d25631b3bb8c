"""Every documented command path that can run here and every operator mistake of
issue 17, as real processes (scripts/check_operator_paths.py): exit codes, one-line
errors naming the fix, no tracebacks unless --logging.debug."""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_operator_paths",
                                               ROOT / "scripts" / "check_operator_paths.py")
assert _spec is not None and _spec.loader is not None
paths = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("check_operator_paths", paths)  # dataclasses look their module up
_spec.loader.exec_module(paths)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Run all cases once, three processes at a time (mostly interpreter start-up)."""
    ws = paths.prepare(tmp_path_factory.mktemp("operator-paths"))
    try:
        all_cases = paths.cases(ws)
        with ThreadPoolExecutor(max_workers=3) as pool:
            outcomes = dict(zip([c.name for c in all_cases],
                                pool.map(lambda c: paths.run_case(c, ws), all_cases), strict=True))
    finally:
        ws.close()
    return outcomes


def _names() -> list[str]:
    return [c.name for c in paths.cases(paths.Workspace(root=Path("/nonexistent")))]


@pytest.mark.parametrize("name", _names())
def test_operator_path(results, name):
    assert results[name] == [], "\n".join(results[name])


def test_the_checker_can_fail(tmp_path):
    """A wrong expectation is reported (the checker is not a rubber stamp)."""
    ws = paths.Workspace(root=tmp_path)
    bogus = paths.Case("bogus", (sys.executable, "-c", "import sys; sys.exit('boom\\nmore')"), 1,
                       (r"never printed",))
    problems = paths.run_case(bogus, ws)
    assert any("does not match" in p for p in problems)
    assert any("one final 'error:' line" in p for p in problems)
    ok = paths.Case("exit 3", (sys.executable, "-c", "raise SystemExit(3)"), 0)
    assert any("exit 3, expected 0" in p for p in paths.run_case(ok, ws))
