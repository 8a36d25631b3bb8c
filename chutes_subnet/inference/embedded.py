"""The embedded backend: the deterministic tiny byte-level model, served in-process.

Decoding runs on one dedicated worker thread per backend (batch 1, requests in FIFO
order) so the event loop never blocks on torch. A stream is real: the worker posts
each :class:`~chutes_subnet.inference.generation.Step` to an ``asyncio.Queue`` the
moment it is decoded, and when the consumer stops iterating (client gone, task
cancelled) the worker is told to stop at the next token.

``/v1/embeddings`` (non-stream only) runs on the same worker:
:mod:`chutes_subnet.inference.embeddings`.

``stop`` is honoured (:func:`~chutes_subnet.inference.generation.steps`); ``n`` other
than 1 is refused. Sampling parameters are ignored: decoding is always greedy, so the output equals
:func:`~chutes_subnet.inference.generation.reference_completion` for the same
``(seed, config)`` — that is what validators check.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from chutes_subnet.errors import InferenceError
from chutes_subnet.inference.base import DEFAULT_MODEL_ID, DEFAULT_SEED
from chutes_subnet.inference.embeddings import parse_embedding_request, run_embeddings
from chutes_subnet.inference.generation import (
    GenerationResult,
    Prepared,
    Step,
    collect,
    default_device,
    get_model,
    prepare,
    steps,
)
from chutes_subnet.inference.model import DEFAULT_CONFIG, ModelConfig, weights_digest
from chutes_subnet.inference.responses import (
    ResponseMeta,
    completion_object,
    token_chunk,
    usage_chunk,
)
from chutes_subnet.wire.protocol import EMBEDDINGS_PATH

__all__ = ["EmbeddedBackend"]

_END = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class EmbeddedBackend:
    """:class:`~chutes_subnet.inference.base.Backend` over the embedded model.

    ``torch_threads`` sets ``torch.set_num_threads`` (process-wide; several miner
    processes share few cores, hence 1); ``None`` leaves torch's setting alone.
    """

    def __init__(
        self,
        *,
        seed: int = DEFAULT_SEED,
        model_id: str = DEFAULT_MODEL_ID,
        device: str | None = None,
        config: ModelConfig = DEFAULT_CONFIG,
        torch_threads: int | None = 1,
    ) -> None:
        if torch_threads is not None:
            if torch_threads < 1:
                raise ValueError("torch_threads must be >= 1")
            torch.set_num_threads(torch_threads)
        self.model_id = model_id
        self.seed = seed
        self.config = config
        self.device = device or default_device()
        self._model = get_model(seed, config, self.device)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-lm")
        self._active: set[threading.Event] = set()
        self._closed = False
        self._digest: str | None = None

    def describe(self) -> dict[str, Any]:
        """Public facts about the model (safe for /health or an attestation payload)."""
        if self._digest is None:
            self._digest = weights_digest(self._model)
        return {
            "model": self.model_id,
            "backend": "embedded",
            "seed": self.seed,
            "device": self.device,
            "config": {k: getattr(self.config, k) for k in self.config.__dataclass_fields__},
            "weights_sha256": self._digest,
        }

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Generate the whole answer; see :class:`~chutes_subnet.inference.base.Backend`."""
        if path == EMBEDDINGS_PATH:
            request = parse_embedding_request(body, self.config)  # refused eagerly
            cancel = self._open_job()
            try:
                return await self._submit(run_embeddings, self._model, request.model_dump(),
                                          self.model_id)
            finally:
                cancel.set()
                self._active.discard(cancel)
        prepared = prepare(path, body, self.config)
        meta = ResponseMeta(prepared.kind, self.model_id)
        cancel = self._open_job()
        try:
            result = await self._submit(self._collect, prepared, cancel)
        finally:
            cancel.set()
            self._active.discard(cancel)
        if result.finish_reason == "cancelled":
            raise InferenceError("generation was cancelled (backend closing)")
        return completion_object(
            meta, result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens
        )

    def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunk per token, then a usage chunk. Validation errors raise here, eagerly."""
        prepared = prepare(path, body, self.config)
        if self._closed:
            raise InferenceError("backend is closed")
        return self._stream(prepared, ResponseMeta(prepared.kind, self.model_id))

    async def aclose(self) -> None:
        """Stop running generations and the worker thread. Idempotent."""
        self._closed = True
        for cancel in list(self._active):
            cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals -------------------------------------------------------------------

    def _open_job(self) -> threading.Event:
        if self._closed:
            raise InferenceError("backend is closed")
        cancel = threading.Event()
        self._active.add(cancel)
        return cancel

    async def _submit(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # executor already shut down
            raise InferenceError("backend is closed") from exc

    def _collect(self, prepared: Prepared, cancel: threading.Event) -> GenerationResult:
        return collect(self._model, prepared, cancel)

    async def _stream(
        self, prepared: Prepared, meta: ResponseMeta
    ) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = self._open_job()

        def post(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # event loop closed: nobody is listening any more
                cancel.set()

        def produce() -> None:
            try:
                for step in steps(self._model, prepared, cancel):
                    post(step)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
                post(_Failed(exc))
            finally:
                post(_END)

        try:
            job = loop.run_in_executor(self._executor, produce)
        except RuntimeError as exc:
            self._active.discard(cancel)
            raise InferenceError("backend is closed") from exc
        # a job cancelled while still queued (aclose) never runs produce(): end anyway
        job.add_done_callback(lambda fut: queue.put_nowait(_END) if fut.cancelled() else None)
        try:
            produced, finished, first = 0, False, True
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, _Failed):
                    raise InferenceError("embedded model failed") from item.error
                step: Step = item
                produced += 1
                finished = step.finish_reason is not None
                yield token_chunk(meta, step.text, step.finish_reason, first)
                first = False
            if not finished:
                raise InferenceError("generation was cancelled (backend closing)")
            yield usage_chunk(meta, len(prepared.prompt_ids), produced)
        finally:
            cancel.set()  # consumer gone or done: the worker stops at the next token
            self._active.discard(cancel)
