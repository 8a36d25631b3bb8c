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

from .attest import AttestedInstance, Attestor
from .benchmark import BenchmarkOutcome, ReferenceCache, RequestSample, run_benchmark, stream_prompt
from .config import BenchmarkConfig, ScoringConfig, ValidatorConfig
from .failures import EvaluationFailure
from .metrics import ValidatorMetrics, create_metrics_app
from .neuron import OrganicSource, Validator
from .prompts import BenchPrompt, miner_prompts, new_round_seed
from .results import REASON_KINDS, AttestationSummary, MinerResult, RoundReport, reason_kind
from .scoring import (
    ScoreEntry,
    dedupe_by_coldkey,
    reset_uids,
    score_round,
    update_ema,
    weights_from_scores,
)
from .state import StateSnapshot, ValidatorState, ValidatorStateError
from .table import ScoreRow, build_score_table, format_score_table, score_table_json

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
