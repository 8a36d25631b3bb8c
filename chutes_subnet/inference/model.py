"""The embedded model: a tiny byte-level causal transformer written in plain torch.

Architecture (pre-norm decoder, weights tied between embedding and output head)::

    ids -> embed -> N x [ x + Attn(RMSNorm(x)) ; x + MLP(RMSNorm(x)) ] -> RMSNorm -> E^T + prior

* RMSNorm without a learned gain;
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
summation order (CPU ISA, GPU kernels) vanishingly unlikely. The default shape
(3 blocks, width 96, ~283k parameters) is sized for one shared CPU core: a decode step
is bound by per-op dispatch cost and by streaming the weights, not by FLOPs.
"""

from __future__ import annotations

import ctypes
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
    "tensor_bytes",
    "weights_digest",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the embedded model (hashable: it keys the model cache)."""

    d_model: int = 96
    n_layers: int = 3
    n_heads: int = 4
    d_ff: int = 256
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
    """Preallocated keys and values of one sequence, per layer ``[1, heads, length, head_dim]``."""

    def __init__(self, config: ModelConfig, length: int, device: torch.device | str) -> None:
        if not 0 < length <= config.max_context:
            raise ValueError("cache length must be within 1..max_context")
        shape = (1, config.n_heads, length, config.head_dim)
        layers = range(config.n_layers)
        dtype = config.torch_dtype
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]
        self.length = length


class _RMSNorm(nn.Module):
    """RMSNorm with unit gain (an untrained model has nothing to learn there).

    ``x / (rms(x) + eps)`` via one vector norm: on CPU this is ~3x cheaper per call
    than pow/mean/rsqrt, and the decode step is bound by per-op cost.
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.inv_sqrt_dim = 1.0 / math.sqrt(dim)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.linalg.vector_norm(x, dim=-1, keepdim=True).mul_(self.inv_sqrt_dim)
        return x / rms.add_(self.eps)


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
        self, x: torch.Tensor, rope: torch.Tensor, cache: KVCache | None, start: int
    ) -> torch.Tensor:
        batch, steps, _ = x.shape
        heads, half = self.n_heads, self.head_dim // 2
        qkv = self.qkv(self.attn_norm(x)).view(batch, steps, 3, heads, self.head_dim)
        # RoPE on q and k at once: adjacent pairs are complex numbers turned by e^{i*pos*f}
        pairs = torch.view_as_complex(qkv[:, :, :2].view(batch, steps, 2, heads, half, 2))
        qk = torch.view_as_real(pairs * rope).flatten(-2)
        q = qk[:, :, 0].transpose(1, 2)  # [B, H, T, hd]
        k = qk[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        if cache is not None:
            end = start + steps
            keys, values = cache.keys[self.index], cache.values[self.index]
            keys[:, :, start:end] = k
            values[:, :, start:end] = v
            k, v = keys[:, :, :end], values[:, :, :end]
        attn = _attention(q, k, v, start).transpose(1, 2).reshape(batch, steps, -1)
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

    rope: torch.Tensor
    prior: torch.Tensor

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
        # unit complex numbers e^{i*pos*f} stored as (re, im) pairs so that Module.to(dtype)
        # converts them like any real buffer: [positions, 1, 1, head_dim / 2, 2]
        rope = torch.stack((angles.cos(), angles.sin()), dim=-1)
        self.register_buffer("rope", rope.view(config.max_context, 1, 1, -1, 2), persistent=False)
        self.register_buffer("prior", _output_prior(config.printable_prior), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    def forward(
        self, ids: torch.Tensor, cache: KVCache | None = None, start: int = 0
    ) -> torch.Tensor:
        """Logits for ``ids`` at positions ``start..start+len``; fills ``cache`` if given."""
        return F.linear(self.hidden(ids, cache, start), self.embed.weight, self.prior)

    def hidden(
        self, ids: torch.Tensor, cache: KVCache | None = None, start: int = 0
    ) -> torch.Tensor:
        """Final normalised hidden states ``[batch, steps, d_model]`` (before the head)."""
        steps = ids.shape[-1]
        limit = cache.length if cache is not None else self.config.max_context
        if start < 0 or start + steps > limit:
            raise ValueError("sequence does not fit the model context / cache")
        if cache is None and start != 0:
            raise ValueError("start > 0 needs the cache holding the earlier positions")
        rope = torch.view_as_complex(self.rope[start : start + steps])
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, rope, cache, start)
        return self.final_norm(x)


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


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of a tensor's elements, in memory order, copied once.

    (``bytes(t.untyped_storage())`` walks the storage element by element in Python:
    about 12 s for the embedded model; this is one memcpy, and needs no NumPy.)
    """
    t = tensor.detach().to("cpu").contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


def weights_digest(model: TinyByteLM) -> str:
    """SHA-256 hex over every parameter's name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(f"{name}|{param.dtype}|{tuple(param.shape)}|".encode())
        digest.update(tensor_bytes(param))
    return digest.hexdigest()
