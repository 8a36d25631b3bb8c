"""``make_backend``: build a backend from a kind name and keyword options (CLI/env glue)."""

from __future__ import annotations

from typing import Any

from chutes_subnet.inference.base import Backend

__all__ = ["BACKEND_KINDS", "make_backend"]

BACKEND_KINDS = ("embedded", "openai")


def make_backend(kind: str, **opts: Any) -> Backend:
    """Build a backend.

    * ``"embedded"``: options of :class:`~chutes_subnet.inference.embedded.EmbeddedBackend`
      (``seed``, ``model_id``, ``device``, ``config``, ``torch_threads``);
    * ``"openai"``: options of
      :class:`~chutes_subnet.inference.upstream.OpenAIUpstreamBackend` (``url`` — also
      accepted as ``base_url`` —, ``model_id``, ``upstream_model``, ``api_key``,
      ``timeout``, ``connect_timeout``, ``read_timeout``, ``max_response_bytes``, ...).

    ``None`` values are dropped so CLI defaults can be passed through unchanged.
    Unknown kinds raise ``ValueError``; unknown options raise ``TypeError``.
    """
    options = {key: value for key, value in opts.items() if value is not None}
    if kind == "embedded":
        from chutes_subnet.inference.embedded import EmbeddedBackend

        return EmbeddedBackend(**options)
    if kind == "openai":
        from chutes_subnet.inference.upstream import OpenAIUpstreamBackend

        if "base_url" in options:
            options.setdefault("url", options.pop("base_url"))
        return OpenAIUpstreamBackend(**options)
    raise ValueError(f"unknown backend kind {kind!r}; expected one of {list(BACKEND_KINDS)}")
