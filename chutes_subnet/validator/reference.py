"""The validator's reference implementation of a chute's model (transformers, CPU or GPU).

A :class:`ReferenceModel` is loaded from a local model directory (``config.json``,
safetensors weights, tokenizer files), never from a hub. It does two jobs:

* **count** completion tokens of a decrypted answer with the chute's tokenizer
  (:meth:`ReferenceModel.count_tokens`); throughput uses this count, and the miner's
  usage claim is checked against it (:mod:`.tokencount`);
* **score** a sample of the answer's tokens teacher-forced (:meth:`ReferenceModel.score`):
  one forward pass over ``prompt + output`` up to the last sampled position yields the
  reference's rank and logprob gap of each emitted token, judged by :mod:`.logprobs`.

The prompt is tokenized the way OpenAI-compatible engines do: ``/v1/chat/completions``
renders the tokenizer's chat template with the generation prompt and tokenizes without
adding special tokens again; ``/v1/completions`` tokenizes the prompt with the
tokenizer's defaults. The answer is re-tokenized from its text (engines' token ids
are not on the wire); for trained models that is the emitted sequence, and the rank
threshold absorbs the rare exception.

Identity: :attr:`ReferenceModel.tokenizer_digest` is the workload manifest's
``tokenizer_digest`` of the reference directory (:func:`chutes_subnet.attestation.verify.merkle.tokenizer_digest`).
A :class:`ChuteReference` is used for a miner whose attested model id matches and,
when the instance attested a workload manifest, only if that manifest names the same
tokenizer (:meth:`ChuteReference.matches`): the count and the scores are then made
with the very tokenizer the miner's release declares.

``transformers`` is imported only when a reference is built (the ``verify`` extra).
Scoring is serialized per model (one forward at a time) and runs in a worker thread.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chutes_subnet.attestation.model_files import tokenizer_digest
from chutes_subnet.attestation.verify.manifest import WorkloadManifest

from .logprobs import LogprobPolicy, TokenScore
from .tokencount import UsageTolerance

__all__ = ["MAX_CHARS_PER_TOKEN", "ChuteReference", "ReferenceBook", "ReferenceModel"]

#: Longest answer text (characters) tokenized per max_tokens of the request: no
#: tokenizer used in practice packs more than this many characters into one token.
MAX_CHARS_PER_TOKEN = 64


class ReferenceModel:
    """Tokenizer + causal LM of one model directory (see module doc).

    ``torch_threads`` sets ``torch.set_num_threads`` (process-wide) when the model is
    loaded; small models on shared cores verify far faster with 1 than with
    oversubscribed intra-op threads. ``None`` leaves torch's setting alone.
    """

    def __init__(self, model_dir: str | Path, *, dtype: str = "float32",
                 attn_implementation: str = "eager", torch_threads: int | None = None) -> None:
        from transformers import AutoTokenizer

        if torch_threads is not None and torch_threads < 1:
            raise ValueError("torch_threads must be >= 1")
        self._threads = torch_threads
        self.model_dir = Path(model_dir)
        self.tokenizer_digest = tokenizer_digest(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir),
                                                       local_files_only=True)
        self._dtype = dtype
        self._attn = attn_implementation
        self._model: Any = None
        self._lock = threading.Lock()

    def _lm(self) -> Any:
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM

            if self._threads is not None:
                torch.set_num_threads(self._threads)
            model = AutoModelForCausalLM.from_pretrained(
                str(self.model_dir), local_files_only=True, dtype=getattr(torch, self._dtype),
                attn_implementation=self._attn)
            self._model = model.eval()
        return self._model

    def encode(self, text: str) -> list[int]:
        """Token ids of answer text (no special tokens added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        """Completion tokens of ``text`` under the chute's tokenizer."""
        return len(self.encode(text))

    def prompt_ids(self, path: str, body: Mapping[str, Any]) -> list[int]:
        """The prompt as an engine tokenizes it (see module doc)."""
        if path == "/v1/chat/completions":
            rendered = self.tokenizer.apply_chat_template(
                list(body["messages"]), add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer.encode(rendered, add_special_tokens=False))
        return list(self.tokenizer.encode(str(body["prompt"])))

    def score(self, prompt_ids: Sequence[int], output_ids: Sequence[int],
              positions: Sequence[int]) -> list[TokenScore]:
        """Rank and gap of ``output_ids[p]`` for each ``p`` in ``positions``, teacher-forced."""
        if not positions:
            return []
        import torch

        last = max(positions)
        ids = list(prompt_ids) + list(output_ids[: last + 1])
        base = len(prompt_ids) - 1  # logits at i predict token i + 1
        with self._lock, torch.inference_mode():
            logits = self._lm()(torch.tensor([ids])).logits[0].float()
            rows = logits[[base + p for p in positions]]
            logp = torch.log_softmax(rows, dim=-1)
            chosen = torch.tensor([output_ids[p] for p in positions])
            token_lp = logp.gather(1, chosen[:, None])[:, 0]
            ranks = (logp > token_lp[:, None]).sum(dim=-1) + 1
            gaps = logp.max(dim=-1).values - token_lp
        return [TokenScore(int(r), float(g)) for r, g in zip(ranks.tolist(), gaps.tolist(), strict=True)]


@dataclass(frozen=True)
class ChuteReference:
    """What the validator needs to verify one chute: its model, thresholds, tolerance."""

    model: ReferenceModel
    policy: LogprobPolicy = field(default_factory=LogprobPolicy)
    usage: UsageTolerance = field(default_factory=UsageTolerance)

    def matches(self, manifest: WorkloadManifest) -> bool:
        """True if ``manifest`` (an attested release) declares this reference's tokenizer."""
        return hmac.compare_digest(manifest.tokenizer_digest.encode(),
                                   self.model.tokenizer_digest.encode())


class ReferenceBook:
    """Chute references by model id (what miners attest they serve)."""

    def __init__(self, references: Mapping[str, ChuteReference] | None = None) -> None:
        self._by_model = dict(references or {})

    @classmethod
    def from_spec(cls, spec: str) -> ReferenceBook:
        """``"MODEL_ID=DIR[,MODEL_ID=DIR...]"`` (the CLI's ``--neuron.references``) with
        default thresholds; an empty spec is an empty book."""
        refs: dict[str, ChuteReference] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            model_id, sep, path = item.partition("=")
            if not sep or not model_id or not path:
                raise ValueError(f"reference {item!r} is not MODEL_ID=DIR")
            if model_id in refs:
                raise ValueError(f"reference for {model_id!r} given twice")
            refs[model_id] = ChuteReference(ReferenceModel(path))
        return cls(refs)

    def get(self, model_id: str) -> ChuteReference | None:
        return self._by_model.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_model

    def __len__(self) -> int:
        return len(self._by_model)
