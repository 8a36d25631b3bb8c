"""The chutes-subnet validator: attest miners, benchmark them encrypted, set weights.

* :class:`Validator` — ``await run_round() -> RoundReport``, ``await run(stop_event)``,
  ``score_table()``; I/O at the edges (chain, HTTP, state file, gateway registry);
* pure core — :func:`score_round`, :func:`update_ema`, :func:`dedupe_by_coldkey`,
  :func:`weights_from_scores`, :func:`miner_prompts`;
* :class:`ValidatorState` — scores and results in SQLite, one transaction per round;
* :class:`ValidatorMetrics` / :func:`create_metrics_app` — Prometheus + ``/scores``;
* :mod:`.cli` — ``neurons/validator.py`` flags and the ``scores`` command.

See docs/validator.md.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

# Lazy exports: ``neurons/validator.py --help`` and start-up errors do not wait for torch.
_EXPORTS = {
    "AttestedInstance": "attestor",
    "Attestor": "attestor",
    "BenchmarkOutcome": "benchmark",
    "ReferenceCache": "benchmark",
    "RequestSample": "benchmark",
    "run_benchmark": "benchmark",
    "stream_prompt": "benchmark",
    "BenchmarkConfig": "config",
    "ScoringConfig": "config",
    "ValidatorConfig": "config",
    "EvaluationFailure": "failures",
    "ValidatorMetrics": "metrics",
    "create_metrics_app": "metrics",
    "OrganicSource": "neuron",
    "Validator": "neuron",
    "BenchPrompt": "prompts",
    "miner_prompts": "prompts",
    "new_round_seed": "prompts",
    "AttestationSummary": "results",
    "MinerResult": "results",
    "REASON_KINDS": "results",
    "RoundReport": "results",
    "reason_kind": "results",
    "ScoreEntry": "scoring",
    "dedupe_by_coldkey": "scoring",
    "reset_uids": "scoring",
    "score_round": "scoring",
    "update_ema": "scoring",
    "weights_from_scores": "scoring",
    "StateSnapshot": "state",
    "ValidatorState": "state",
    "ValidatorStateError": "state",
    "ScoreRow": "table",
    "build_score_table": "table",
    "format_score_table": "table",
    "score_table_json": "table",
}


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Validator",
    "OrganicSource",
    "ValidatorConfig",
    "ScoringConfig",
    "BenchmarkConfig",
    "Attestor",
    "AttestedInstance",
    "run_benchmark",
    "stream_prompt",
    "BenchmarkOutcome",
    "RequestSample",
    "ReferenceCache",
    "EvaluationFailure",
    "BenchPrompt",
    "miner_prompts",
    "new_round_seed",
    "REASON_KINDS",
    "reason_kind",
    "AttestationSummary",
    "MinerResult",
    "RoundReport",
    "ScoreEntry",
    "score_round",
    "reset_uids",
    "update_ema",
    "dedupe_by_coldkey",
    "weights_from_scores",
    "ValidatorState",
    "StateSnapshot",
    "ValidatorStateError",
    "ValidatorMetrics",
    "create_metrics_app",
    "ScoreRow",
    "build_score_table",
    "format_score_table",
    "score_table_json",
]


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("_")})
