"""CPU-bound round work in worker processes, so a validator uses every core.

Two kinds of work dominate a round's CPU at fleet scale (``bench/validator.py``):
verifying attestation evidence (quote and GPU signature checks) and recomputing the
embedded model's answers for the sampled prompts. Threads do not help: both hold the
GIL most of the time. :class:`WorkerPool` runs them in ``workers`` processes instead:

* :meth:`WorkerPool.verify` — ``Verifier.verify(evidence, ...)`` in a worker, on a
  verifier each worker builds once from ``verifier_factory`` (a picklable callable:
  collateral and OCSP sources hold locks and HTTP clients, so they are rebuilt, not
  copied). Each worker keeps its own collateral cache and verified-link cache.
* :meth:`WorkerPool.generate` — the embedded model's greedy answer
  (:func:`~chutes_subnet.inference.run_generation`, the same code path as a miner's),
  with ``torch`` limited to one thread per worker: exact-match verification needs
  bit-identical output, and one thread per process is also the fastest layout for a
  small model on shared cores.

Workers are started with ``spawn`` (never ``fork`` a process that runs threads) and
``max_tasks_per_child`` unset; :meth:`close` waits for them. A verifier that consumes
challenge nonces from its own book must verify in the validator's process (the book
lives there): :class:`~chutes_subnet.validator.attestor.Attestor` checks that.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chutes_subnet.attestation.verify.evidence import Evidence
    from chutes_subnet.attestation.verify.reasons import Verdict
    from chutes_subnet.attestation.verify.verifier import Verifier

__all__ = ["WorkerPool"]

_VERIFIER: Any = None


def _init(verifier_factory: Callable[[], Verifier] | None) -> None:
    global _VERIFIER
    import torch

    torch.set_num_threads(1)
    _VERIFIER = verifier_factory() if verifier_factory is not None else None


def _verify(evidence: Evidence, kwargs: dict[str, Any]) -> Verdict:
    if _VERIFIER is None:
        raise RuntimeError("this worker pool has no verifier")
    return _VERIFIER.verify(evidence, **kwargs)


def _generate(path: str, body: dict[str, Any], seed: int) -> tuple[str, int]:
    from chutes_subnet.inference import run_generation

    result = run_generation(path, body, seed=seed)
    return result.text, result.completion_tokens


class WorkerPool:
    """A process pool for attestation verification and reference recomputation."""

    def __init__(self, workers: int, verifier_factory: Callable[[], Verifier] | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.verifies = verifier_factory is not None
        self._exec = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init, initargs=(verifier_factory,))

    async def verify(self, evidence: Evidence, **kwargs: Any) -> Verdict:
        """``Verifier.verify(evidence, **kwargs)`` in a worker."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._exec, _verify, evidence, kwargs)

    async def generate(self, path: str, body: dict[str, Any], seed: int) -> tuple[str, int]:
        """``(text, completion_tokens)`` of the embedded model's answer, in a worker."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._exec, _generate, path, body, seed)

    def warm_up(self) -> None:
        """Start every worker now (imports and verifier construction take seconds)."""
        futures = [self._exec.submit(_noop) for _ in range(self.workers * 2)]
        for f in futures:
            f.result()

    def close(self) -> None:
        """Stop the workers (waits for running tasks)."""
        self._exec.shutdown(wait=True, cancel_futures=True)


def _noop() -> None:
    return None
