"""JSON for envelope payloads: orjson when installed, stdlib otherwise, one contract.

``loads`` takes bytes (or a memoryview over them: no copy) a peer controls and raises
``ValueError`` for anything malformed, including nesting deeper than
:data:`MAX_DEPTH` (orjson's own limit is 1024, and stdlib's RecursionError is
translated). orjson is stricter than stdlib (no NaN/Infinity, no lone surrogates) and
reads integers beyond 64 bits as floats, as JavaScript does: envelope payloads carry
integers within 64 bits (docs/protocol.md). ``dumps`` returns compact UTF-8 bytes
(stdlib writes what orjson cannot: integers beyond 64 bits, non-string keys).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["IMPL", "MAX_DEPTH", "dumps", "loads"]

#: Nesting bound for peer JSON (both implementations refuse beyond about this depth).
MAX_DEPTH = 1024



def _bounded_orjson() -> object | None:
    """orjson if installed *and* it refuses deep nesting (old releases recurse until they crash)."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a declared dependency
        return None
    probe = b"[" * (MAX_DEPTH + 8) + b"]" * (MAX_DEPTH + 8)
    try:
        orjson.loads(probe)
    except ValueError:
        return orjson
    return None  # pragma: no cover - an orjson without a depth limit is not used


_orjson: Any = _bounded_orjson()
IMPL = "orjson" if _orjson is not None else "json"


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON bytes of ``obj`` (``ValueError`` if not serialisable)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except TypeError:  # orjson.JSONEncodeError: big integers, non-str keys, depth
            pass
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except (TypeError, RecursionError) as exc:
        raise ValueError(f"payload is not JSON-serialisable: {type(exc).__name__}") from None


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse peer JSON; every failure is a ``ValueError``."""
    if _orjson is not None:
        return _orjson.loads(data)  # orjson.JSONDecodeError is a ValueError
    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except RecursionError:
        raise ValueError("JSON nesting too deep") from None
