"""Where the real public attestation vectors are: one resolver for tests, benches and fuzzers.

Order: ``$CHUTES_VECTORS_DIR``; the project lead's ``../shared/vectors``; the copy in
``tests/data/vectors`` (present in every clone, so CI on a fresh machine has them).
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]


def vectors_dir() -> Path:
    env = os.environ.get("CHUTES_VECTORS_DIR")
    if env:
        return Path(env)
    shared = _REPO.parent / "shared" / "vectors"
    if (shared / "tdx" / "tdx_v4_quote.bin").is_file():
        return shared
    return _REPO / "tests" / "data" / "vectors"


VECTORS_DIR = vectors_dir()
