"""Test support: valid chute specs (a manifest whose digests are well-formed)."""

from __future__ import annotations

from typing import Any

__all__ = ["IMAGE", "chute_dict"]

IMAGE = "sha256:" + "ab" * 32


def chute_dict(name: str, **over: Any) -> dict[str, Any]:
    """A valid spec for ``name`` (fields overridden by ``over``)."""
    spec: dict[str, Any] = {
        "name": name,
        "image_digest": IMAGE,
        "manifest": {
            "model_id": name, "model_revision": "r1",
            "weights_digest": "sha256:" + "11" * 32, "tokenizer_digest": "sha256:" + "22" * 32,
            "engine": "embedded", "engine_version": "1", "image_digest": IMAGE,
            "dtype": "float64", "quantization": "none", "max_context": 8192,
        },
        "hardware": {"gpu_model": "any", "gpu_count": 0, "gpu_memory_gb": 0},
        "prices": {"prompt_rao_per_mtok": 10, "completion_rao_per_mtok": 40},
        "scaling": {"min_instances": 1, "max_instances": 4},
    }
    spec.update(over)
    return spec
