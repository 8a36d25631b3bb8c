"""Run fuzz targets for a fixed number of inputs each and print a table.

Usage::

    python -m fuzz.run                      # every target, 100,000 inputs, atheris
    python -m fuzz.run --quick              # 2,000 inputs each
    python -m fuzz.run --targets tdx_quote,sse_parser --runs 20000 --engine hypothesis

Engines: ``atheris`` (coverage-guided, one libFuzzer subprocess per target, seeded
with the target's valid inputs; default when installed) and ``hypothesis``
(in-process, seed mutations plus random bytes). Crash inputs and the grown corpora
are kept under ``--out``. Ends with one JSON line: per-target inputs, seconds and
crashes. Exit status 1 if any target crashed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Result", "run_atheris", "run_hypothesis", "main"]

_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")
_COV = re.compile(rb"cov: (\d+) ft: (\d+)")
_REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    target: str
    engine: str
    inputs: int
    seconds: float
    crashes: int
    coverage: int | None = None
    detail: str = ""


def _write_corpus(name: str, out: Path) -> Path:
    from fuzz.targets import TARGETS

    corpus = out / "corpus" / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(TARGETS[name].seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    return corpus


def run_atheris(name: str, runs: int, out: Path, timeout: float) -> Result:
    """One libFuzzer subprocess for ``name``; parses its run count and coverage."""
    corpus = _write_corpus(name, out)
    crashes = out / "crashes"
    crashes.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "fuzz.harness", name, f"-runs={runs}", "-max_len=20000",
           "-timeout=20", "-rss_limit_mb=4096", f"-artifact_prefix={crashes}/{name}-",
           "-print_final_stats=1", str(corpus)]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=_REPO, capture_output=True, timeout=timeout)
        log, code = proc.stderr + proc.stdout, proc.returncode
    except subprocess.TimeoutExpired as exc:
        log, code = (exc.stderr or b"") + b"\nrunner timeout", -1
    elapsed = time.monotonic() - start
    (out / f"{name}.log").write_bytes(log)
    done = _DONE.search(log)
    cov = _COV.findall(log)
    found = len(list(crashes.glob(f"{name}-*")))
    crashed = code != 0 or found > 0
    detail = "" if not crashed else _tail(log)
    return Result(name, "atheris", int(done.group(1)) if done else 0, round(elapsed, 1),
                  max(found, 1) if crashed else 0, int(cov[-1][0]) if cov else None, detail)


def run_hypothesis(name: str, runs: int) -> Result:
    """``runs`` hypothesis examples of ``name`` in this process."""
    from hypothesis import HealthCheck, given, settings

    from fuzz.strategies import inputs_for
    from fuzz.targets import TARGETS

    target = TARGETS[name]
    count = 0

    @settings(max_examples=runs, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(inputs_for(target.seeds()))
    def once(data: bytes) -> None:
        nonlocal count
        count += 1
        target.check(data)

    start = time.monotonic()
    try:
        once()
        crashes, detail = 0, ""
    except Exception as exc:  # noqa: BLE001 - report, do not die: other targets go on
        crashes, detail = 1, f"{type(exc).__name__}: {str(exc)[:200]}"
    return Result(name, "hypothesis", count, round(time.monotonic() - start, 1), crashes,
                  None, detail)


def _tail(log: bytes) -> str:
    lines = log.decode("utf-8", "replace").splitlines()
    picked = [ln for ln in lines if "Error" in ln or "Crash" in ln or "Uncaught" in ln]
    return " | ".join((picked or lines)[-3:])[:300]


def _table(results: list[Result]) -> str:
    head = (f"{'target':20} {'engine':10} {'inputs':>9} {'seconds':>8} {'exec/s':>8} "
            f"{'cov':>5} {'crashes':>7}")
    rows = [head, "-" * len(head)]
    for r in results:
        rate = f"{r.inputs / r.seconds:.0f}" if r.seconds else "-"
        cov = "-" if r.coverage is None else str(r.coverage)
        rows.append(f"{r.target:20} {r.engine:10} {r.inputs:>9} {r.seconds:>8} {rate:>8} "
                    f"{cov:>5} {r.crashes:>7}")
        if r.detail:
            rows.append(f"    !! {r.detail}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    from fuzz.targets import TARGETS

    p = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    p.add_argument("--targets", default="all", help="comma-separated names, or 'all'")
    p.add_argument("--runs", type=int, default=100_000, help="inputs per target")
    p.add_argument("--quick", action="store_true", help="2,000 inputs per target")
    p.add_argument("--engine", choices=("atheris", "hypothesis"), default=None)
    p.add_argument("--jobs", type=int, default=2, help="parallel atheris processes")
    p.add_argument("--out", default=None, help="directory for corpora, logs and crashes")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per target")
    p.add_argument("--list", action="store_true", help="list the targets and exit")
    args = p.parse_args(argv)
    if args.list:
        for t in TARGETS.values():
            print(f"{t.name:20} {t.what}")
        return 0
    names = sorted(TARGETS) if args.targets == "all" else args.targets.split(",")
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown targets: {unknown}")
    runs = 2_000 if args.quick else args.runs
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    out = Path(args.out or tempfile.mkdtemp(prefix="chutes-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    if engine == "atheris":
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda n: run_atheris(n, runs, out, args.timeout), names))
    else:
        results = []
        for n in names:
            results.append(run_hypothesis(n, runs))
            r = results[-1]
            print(f"done {r.target}: {r.inputs} inputs, {r.seconds} s, {r.crashes} crashes",
                  file=sys.stderr, flush=True)
    print(_table(results))
    print(f"artifacts: {out}")
    summary = {"engine": engine, "runs_per_target": runs,
               "total_inputs": sum(r.inputs for r in results),
               "total_crashes": sum(r.crashes for r in results),
               "targets": {r.target: {k: v for k, v in asdict(r).items()
                                      if k not in ("target", "engine", "detail")}
                           for r in results}}
    print(json.dumps(summary, separators=(",", ":")))
    return 1 if summary["total_crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
