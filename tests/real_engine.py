"""A real third-party OpenAI-compatible engine for tests: ``transformers serve`` on CPU
over a tiny Llama-architecture model whose weights and tokenizer are made here,
offline (seeded random weights saved as safetensors; no hub access).

The tokenizer is character-level (one token per printable ASCII character, plus
``<s>``/``</s>``), so decoded text re-tokenizes to exactly the generated tokens, and
the lm_head rows of the special tokens are zero so greedy decoding never stops early
or emits a token that decoding drops: a generation is always ``max_tokens`` long.
``initializer_range`` is large so greedy choices are not near-ties (a reference in
another dtype or attention kernel picks the same tokens).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port

#: the name miners claim for the tiny model (a "big" public-looking name on purpose)
MODEL_NAME = "test-org/tiny-llama-7b-instruct"
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
_CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


@dataclass(frozen=True)
class TinyLlama:
    """Shape of a tiny Llama model."""

    seed: int = 1
    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    init_range: float = 0.5


def build_tokenizer(path: Path) -> None:
    """Write a character-level fast tokenizer with a chat template to ``path``."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(_CHARS)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(path))


def build_model(path: Path, spec: TinyLlama = TinyLlama()) -> Path:
    """Create ``path`` with config, tokenizer and seeded random safetensors weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path.mkdir(parents=True, exist_ok=True)
    build_tokenizer(path)
    config = LlamaConfig(
        vocab_size=len(_CHARS) + 2, hidden_size=spec.hidden, intermediate_size=2 * spec.hidden,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, max_position_embeddings=1024,
        bos_token_id=0, eos_token_id=1, initializer_range=spec.init_range,
        tie_word_embeddings=False, torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[:2].zero_()  # <s>, </s>: never the greedy choice
    model.save_pretrained(str(path), safe_serialization=True)
    return path


class TransformersServe:
    """``transformers serve MODEL_DIR`` as a subprocess on a loopback port."""

    def __init__(self, model_dir: Path, *, dtype: str = "float32",
                 attn: str | None = None) -> None:
        self.model_dir = model_dir
        self.port = free_port()
        self.dtype = dtype
        self.attn = attn
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = model_dir.parent / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def upstream_model(self) -> str:
        """The model name the server answers to (it is pinned to the directory)."""
        return str(self.model_dir)

    def start(self, timeout: float = 120.0) -> TransformersServe:
        exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
        cmd = [exe, "serve", str(self.model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--device", "cpu", "--dtype", self.dtype,
               "--log-level", "warning"]
        if self.attn:
            cmd += ["--attn-implementation", self.attn]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("transformers serve exited: "
                                   + self.log.read_text(errors="replace")[-2000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("transformers serve did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.proc = None


@contextlib.contextmanager
def serving(model_dir: Path, **kw: str) -> Iterator[TransformersServe]:
    server = TransformersServe(model_dir, **kw).start()
    try:
        yield server
    finally:
        server.stop()
