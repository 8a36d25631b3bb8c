"""scripts/audit.sh: verdicts of the dependency audit, checked offline.

A stand-in ``pip_audit`` module (first on PYTHONPATH) answers with a chosen report,
so the script's own logic — pinning, allowlist with expiry, and the three outcomes
(ok / vulnerable / "skipped: advisory DB unreachable") — is tested without network.
One more test runs the real pip-audit through a dead proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.dev_extra import require_dev_extra

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "audit.sh"

STUB = '''
import json, os, sys
args = sys.argv[1:]
if "--version" in args:
    print("pip-audit stub"); sys.exit(0)
out = args[args.index("-o") + 1]
ignored = {args[i + 1] for i, a in enumerate(args) if a == "--ignore-vuln"}
report = json.loads(os.environ["STUB_REPORT"])
for dep in report["dependencies"]:
    dep["vulns"] = [v for v in dep.get("vulns", []) if v["id"] not in ignored]
open(out, "w").write(json.dumps(report))
with open(os.environ["STUB_ARGS"], "w") as fh:
    json.dump(args, fh)
sys.exit(1 if any(d.get("vulns") for d in report["dependencies"]) else 0)
'''


def _run(tmp_path: Path, report: dict, allowlist: str = "") -> tuple[int, str, list[str]]:
    stub = tmp_path / "stub" / "pip_audit"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("")
    (stub / "__main__.py").write_text(STUB)
    allow = tmp_path / "allow.txt"
    allow.write_text(allowlist)
    path = f"{stub.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = {**os.environ, "PYTHONPATH": path,
           "STUB_REPORT": json.dumps(report), "STUB_ARGS": str(tmp_path / "args.json"),
           "AUDIT_ALLOWLIST": str(allow)}
    proc = subprocess.run(["bash", str(SCRIPT), "--direct"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    args = json.loads((tmp_path / "args.json").read_text()) \
        if (tmp_path / "args.json").exists() else []
    return proc.returncode, proc.stdout + proc.stderr, args


def _dep(name: str, *vulns: str, skip: str | None = None) -> dict:
    d: dict = {"name": name, "version": "1.0"}
    if skip:
        d["skip_reason"] = skip
    else:
        d["vulns"] = [{"id": v, "fix_versions": ["1.1"]} for v in vulns]
    return d


def test_clean_report_passes(tmp_path: Path) -> None:
    code, out, args = _run(tmp_path, {"dependencies": [_dep("httpx"), _dep("pydantic")]})
    assert code == 0
    assert json.loads(out.strip().splitlines()[-1])["status"] == "ok"
    assert "--no-deps" in args and "-r" in args


def test_vulnerable_dependency_fails_with_a_table(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, {"dependencies": [_dep("aiohttp", "GHSA-xxxx-1"),
                                                    _dep("httpx")]})
    assert code == 1
    assert "aiohttp" in out and "GHSA-xxxx-1" in out
    assert json.loads(out.strip().splitlines()[-1])["advisories"] == 1


def test_allowlisted_advisory_passes_until_it_expires(tmp_path: Path) -> None:
    report = {"dependencies": [_dep("aiohttp", "GHSA-xxxx-1")]}
    code, _, args = _run(tmp_path / "a", report,
                         "# comment\nGHSA-xxxx-1 until=2999-01-01 aiohttp: not reachable\n")
    assert code == 0 and args[args.index("--ignore-vuln") + 1] == "GHSA-xxxx-1"
    code, out, args = _run(tmp_path / "b", report, "GHSA-xxxx-1 until=2001-01-01 old\n")
    assert code == 1 and "--ignore-vuln" not in args
    assert "expired" in out


def test_unreachable_advisory_db_is_reported_as_skipped_not_passed(tmp_path: Path) -> None:
    skip = "Dependency not found on PyPI and could not be audited: x (1.0)"
    code, out, _ = _run(tmp_path, {"dependencies": [_dep("httpx", skip=skip),
                                                    _dep("pydantic", skip=skip)]})
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("skipped: advisory DB unreachable")
    assert "NOT a pass" in out


def test_work_directory_is_cleaned_up(tmp_path: Path) -> None:
    _, _, args = _run(tmp_path, {"dependencies": []})
    reqs = Path(args[args.index("-r") + 1])
    assert not reqs.exists()  # the script cleans its work directory


def test_real_pip_audit_through_a_dead_proxy_says_skipped(tmp_path: Path) -> None:
    require_dev_extra("pip_audit")
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "", "no_proxy": ""}
    proc = subprocess.run(["bash", str(SCRIPT), "--direct"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped: advisory DB unreachable" in proc.stdout
