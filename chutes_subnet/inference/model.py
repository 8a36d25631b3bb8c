"""The embedded model: a tiny byte-level causal transformer written in plain torch.

Architecture (pre-norm decoder, weights tied between embedding and output head)::

    ids -> embed -> N x [ x + Attn(RMSNorm(x)) ; x + MLP(RMSNorm(x)) ] -> RMSNorm -> E^T + prior

* attention: fused QKV projection, rotary position embedding (RoPE), causal mask,
  scaled dot-product attention; an optional :class:`KVCache` makes incremental
  decoding cost one position per step;
* MLP: ``W2(gelu_tanh(W1 x))``;
* ``prior``: a fixed (not random) output bias toward printable ASCII so the
  untrained model emits readable bytes; the BOS id can never be produced.

Weights are *untrained*: they are drawn from a ``torch.Generator`` seeded with
``seed`` (uniform draws in float64 on the CPU, scaled per tensor), so every process
that builds ``(seed, config)`` gets bit-identical weights on any machine. The default
dtype is float64: the validator recomputes greedy outputs on its own hardware and
demands an exact match, and float64 makes an argmax flip caused by a different
summation order (CPU ISA, GPU kernels) vanishingly unlikely, at no measurable cost
for a model this small (it is bound by per-op overhead, not FLOPs).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from chutes_subnet.inference.tokenizer import BOS_ID, VOCAB_SIZE

__all__ = [
    "ModelConfig",
    "DEFAULT_CONFIG",
    "KVCache",
    "TinyByteLM",
    "build_model",
    "weights_digest",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the embedded model (hashable: it keys the model cache)."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 384
    max_context: int = 8192
    dtype: str = "float64"
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    printable_prior: float = 2.0
    init_gain: float = 2.0

    def __post_init__(self) -> None:
        if self.d_model <= 0 or self.n_layers <= 0 or self.n_heads <= 0 or self.d_ff <= 0:
            raise ValueError("model dimensions must be positive")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError("d_model / n_heads must be an even integer")
        if self.max_context < 2:
            raise ValueError("max_context must be at least 2")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


DEFAULT_CONFIG = ModelConfig()


class KVCache:
    """Preallocated keys/values for one sequence: ``[layers, 1, heads, length, head_dim]``."""

    def __init__(self, config: ModelConfig, length: int, device: torch.device | str) -> None:
        if not 0 < length <= config.max_context:
            raise ValueError("cache length must be within 1..max_context")
        shape = (config.n_layers, 1, config.n_heads, length, config.head_dim)
        self.keys = torch.zeros(shape, dtype=config.torch_dtype, device=device)
        self.values = torch.zeros(shape, dtype=config.torch_dtype, device=device)
        self.length = length


class _RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class _Block(nn.Module):
    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        self.index = index
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.attn_norm = _RMSNorm(config.d_model, config.norm_eps)
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.attn_out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.mlp_norm = _RMSNorm(config.d_model, config.norm_eps)
        self.mlp_in = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.mlp_out = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None,
        start: int,
    ) -> torch.Tensor:
        batch, steps, _ = x.shape
        qkv = self.qkv(self.attn_norm(x)).view(batch, steps, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, hd]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is not None:
            end = start + steps
            cache.keys[self.index, :, :, start:end] = k
            cache.values[self.index, :, :, start:end] = v
            k = cache.keys[self.index, :, :, :end]
            v = cache.values[self.index, :, :, :end]
        attn = _attention(q, k, v, start)
        attn = attn.transpose(1, 2).reshape(batch, steps, -1)
        x = x + self.attn_out(attn)
        return x + self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(x)), approximate="tanh"))


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int) -> torch.Tensor:
    """Causal attention of queries at positions ``start..`` over keys ``0..``."""
    steps, total = q.shape[-2], k.shape[-2]
    if steps == 1:  # one new token sees every cached position: no mask needed
        return F.scaled_dot_product_attention(q, k, v)
    if start == 0 and steps == total:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    rows = torch.arange(start, start + steps, device=q.device).unsqueeze(1)
    cols = torch.arange(total, device=q.device).unsqueeze(0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=cols <= rows)


class TinyByteLM(nn.Module):
    """Byte-level causal LM; ``forward`` returns logits ``[batch, steps, VOCAB_SIZE]``."""

    def __init__(self, config: ModelConfig = DEFAULT_CONFIG) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(VOCAB_SIZE, config.d_model)
        self.blocks = nn.ModuleList(_Block(config, i) for i in range(config.n_layers))
        self.final_norm = _RMSNorm(config.d_model, config.norm_eps)
        inv_freq = 1.0 / config.rope_base ** (
            torch.arange(0, config.head_dim, 2, dtype=torch.float64) / config.head_dim
        )
        angles = torch.outer(torch.arange(config.max_context, dtype=torch.float64), inv_freq)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)
        self.register_buffer("prior", _output_prior(config.printable_prior), persistent=False)

    def forward(
        self, ids: torch.Tensor, cache: KVCache | None = None, start: int = 0
    ) -> torch.Tensor:
        """Logits for ``ids`` at positions ``start..start+len``; fills ``cache`` if given."""
        steps = ids.shape[-1]
        limit = cache.length if cache is not None else self.config.max_context
        if start < 0 or start + steps > limit:
            raise ValueError("sequence does not fit the model context / cache")
        if cache is None and start != 0:
            raise ValueError("start > 0 needs the cache holding the earlier positions")
        cos = self.rope_cos[start : start + steps]
        sin = self.rope_sin[start : start + steps]
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, cos, sin, cache, start)
        return self.final_norm(x) @ self.embed.weight.T + self.prior


def _output_prior(strength: float) -> torch.Tensor:
    prior = torch.zeros(VOCAB_SIZE, dtype=torch.float64)
    prior[0x20:0x7F] = strength
    prior[0x0A] = strength
    prior[BOS_ID] = -math.inf
    return prior


def _init_weights(model: TinyByteLM, seed: int) -> None:
    """Fill every parameter from one seeded CPU generator, in registration order."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    config = model.config
    residual_scale = 1.0 / math.sqrt(2 * config.n_layers)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
                continue
            # gain > 1 makes the untrained network chaotic: greedy output depends on
            # the whole prompt instead of settling into one repeated byte
            std = config.init_gain / math.sqrt(param.shape[-1])
            if name == "embed.weight":
                std = 1.0 / math.sqrt(config.d_model)
            elif name.endswith(("attn_out.weight", "mlp_out.weight")):
                std *= residual_scale
            # uniform(-a, a) has std a / sqrt(3)
            draw = torch.rand(param.shape, generator=generator, dtype=torch.float64)
            param.copy_((draw * 2.0 - 1.0) * (std * math.sqrt(3.0)))


def build_model(
    seed: int, config: ModelConfig = DEFAULT_CONFIG, device: str | torch.device = "cpu"
) -> TinyByteLM:
    """A fresh model with weights derived from ``seed``, in eval mode on ``device``."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError("seed must be an integer in [0, 2**63)")
    model = TinyByteLM(config).to(dtype=torch.float64)
    _init_weights(model, seed)
    model = model.to(device=device, dtype=config.torch_dtype)  # buffers follow
    model.eval()
    model.requires_grad_(False)
    return model


def weights_digest(model: TinyByteLM) -> str:
    """SHA-256 hex over every parameter's name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        tensor = param.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
